"""Shared-prefix computation in the eval stage: SmolLM2 replies to the held-out prompts, and the
reward model scores them, with the character profile's tokens computed once per batch
(``share_prefix=True``, the default) against every prompt in full, in one run.

    .venv/bin/python bench/eval_shared_prefix.py                      # 16 prompts, 32 new tokens
    .venv/bin/python bench/eval_shared_prefix.py --prompts 48 --max-new-tokens 48 --batch 8

The prompts are the bundled held-out prompts of the English characters (``eval_prompts.jsonl``),
prepared with SmolLM2's tokenizer (``charops data prepare --config smollm2-cpu`` into a temp
folder, or ``--dataset DIR``). Generation: ``charops.eval.generate.generate_replies`` greedy, the
README main job's settings (repetition penalty 1.15); scoring: ``charops.train.reward.
score_conversations`` on prompt + reply with SmolLM2 loaded as a one-label sequence classifier
(its head untrained: the numbers only have to agree). Reported: seconds of each path, their
ratio, the prompt tokens the shared path did not compute, and whether replies and scores agree.
Printed and saved to bench/results/eval_shared_prefix.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dataset", type=Path, default=None, help="a dataset prepared with SmolLM2's tokenizer")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_shared_prefix.json")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification

    from charops.config import load_config
    from charops.eval.generate import GenerationSettings, generate_replies, load_model, load_prompts
    from charops.io import write_json
    from charops.model.load import load_tokenizer, resolve_model
    from charops.train.reward import score_conversations

    tmp = tempfile.TemporaryDirectory()
    dataset = args.dataset
    if dataset is None:
        from charops.data.prepare import PrepareConfig, run

        dataset = Path(tmp.name) / "dataset"
        run(load_config(PrepareConfig, "smollm2-cpu", [f"output_dir={dataset}", "progress=false"]))
    prompts = load_prompts(dataset, languages=["en"])
    # Every character's prompts in turn, so a small --prompts still covers several profiles.
    by_char: dict[str, list[dict]] = {}
    for p in prompts:
        by_char.setdefault(p["character"], []).append(p)
    mixed = [p for group in zip(*by_char.values(), strict=False) for p in group]
    prompts = mixed[:args.prompts]
    loaded = load_model("charops:smollm2-135m")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch,
                                  repetition_penalty=1.15)
    gen = {}
    for share in (True, False):
        t0 = time.perf_counter()
        replies, stats = generate_replies(loaded, "smollm2", prompts, settings, share_prefix=share)
        gen[share] = {"seconds": time.perf_counter() - t0, "replies": [r["reply"] for r in replies],
                      "prompt_tokens": sum(r["prompt_tokens"] for r in replies),
                      "saved": stats["shared_prefix_tokens_saved"], "records": replies}
    del loaded
    path = resolve_model("charops:smollm2-135m")
    scorer = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    tok = load_tokenizer(path)
    convs = [r["messages"] + [{"role": "assistant", "content": r["reply"]}] for r in gen[True]["records"]]
    score = {}
    for share in (True, False):
        t0 = time.perf_counter()
        values = score_conversations(scorer, tok, convs, batch_size=args.batch, share_prefix=share)
        score[share] = {"seconds": time.perf_counter() - t0, "values": values}
    diff = max(abs(a - b) for a, b in zip(score[True]["values"], score[False]["values"], strict=True))
    result = {
        "prompts": len(prompts), "characters": len(by_char), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch, "threads": torch.get_num_threads(),
        "generation": {"shared_s": gen[True]["seconds"], "full_s": gen[False]["seconds"],
                       "speedup": gen[False]["seconds"] / gen[True]["seconds"],
                       "prompt_tokens": gen[True]["prompt_tokens"], "prompt_tokens_not_recomputed": gen[True]["saved"],
                       "same_replies": gen[True]["replies"] == gen[False]["replies"],
                       "differing_replies": sum(a != b for a, b in zip(gen[True]["replies"], gen[False]["replies"],
                                                                       strict=True))},
        "scoring": {"shared_s": score[True]["seconds"], "full_s": score[False]["seconds"],
                    "speedup": score[False]["seconds"] / score[True]["seconds"], "max_abs_diff": diff},
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    tmp.cleanup()
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
