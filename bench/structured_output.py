"""Structured output (``response_format``) cost on CPU: tokens/s with and without the grammar.

In one run, on one model, through the serving engine in process (no HTTP), greedy: the same
prompts generated free and constrained by JSON schemas through llguidance
(charops.serve.structured), plus the grammar's own cost: compiling a schema (first use and
cached) and the mask per token::

    OMP_NUM_THREADS=1 .venv/bin/python bench/structured_output.py                  # tiny model, built here
    OMP_NUM_THREADS=1 .venv/bin/python bench/structured_output.py --model /tmp/smollm2

Prints progress and a JSON summary; saves it to ``bench/results/structured_output.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Rate the reply from 1 to 5 and say why.", "Which reply is better, A or B?",
           "Give the scores as JSON.", "Describe the character in JSON."]
SCHEMAS = {
    "pairwise": {"type": "object", "properties": {"winner": {"enum": ["A", "B", "tie"]},
                                                  "reason": {"type": "string", "maxLength": 40}},
                 "required": ["winner", "reason"], "additionalProperties": False},
    "pointwise": {"type": "object", "properties": {"scores": {
        "type": "object", "properties": {k: {"type": "integer", "minimum": 1, "maximum": 5}
                                         for k in ("Consistency", "Human-likeness", "Engagement", "Overall")},
        "required": ["Consistency", "Human-likeness", "Engagement", "Overall"], "additionalProperties": False}},
        "required": ["scores"], "additionalProperties": False},
}


def progress(msg: str) -> None:
    print(f"[structured_output] {msg}", file=sys.stderr, flush=True)


def build_tiny(work: Path) -> Path:
    from charops.config import load_config
    from charops.model.init import ModelInitConfig, run

    out = work / "tiny"
    run(load_config(ModelInitConfig, "tiny", [f"output_dir={out}"]))
    return out


class Timed:
    """Wraps a logits processor, adding up the time it takes (the grammar's share of a step)."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, seq, scores):
        t = time.perf_counter()
        out = self.inner(seq, scores)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def run(model_dir: Path, max_tokens: int, rounds: int) -> dict:
    from charops.serve.engine import Engine, GenRequest
    from charops.serve.server import load_model
    from charops.serve.structured import Structured

    model, tok = load_model(model_dir)
    engine = Engine(model, tok, max_batch_size=1)
    engine.start()
    structured = Structured(tok, engine.eos_ids)
    ids = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
           for p in PROMPTS]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in ids]

    def generate(prompt: list[int], processor=None, min_tokens: int = 0) -> tuple[int, float, str]:
        req = GenRequest(input_ids=prompt, max_new_tokens=max_tokens, min_new_tokens=min_tokens, temperature=0.0,
                         logits_processor=processor).attach_sync()
        t = time.perf_counter()
        engine.submit(req)
        list(req.events())
        return req.completion_tokens, time.perf_counter() - t, req.text

    out: dict = {"model": str(model_dir), "max_tokens": max_tokens, "rounds": rounds}
    try:
        generate(ids[0], min_tokens=4)  # warm-up
        tokens = seconds = 0.0
        for _ in range(rounds):
            for p in ids:
                n, s, _ = generate(p, min_tokens=max_tokens)
                tokens, seconds = tokens + n, seconds + s
        out["free"] = {"tokens": int(tokens), "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}
        progress(f"free: {out['free']}")
        for name, schema in SCHEMAS.items():
            body = {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}}
            t = time.perf_counter()
            grammar = structured.grammar_for(body)
            compile_first = time.perf_counter() - t
            t = time.perf_counter()
            structured.grammar_for(body)
            compile_cached = time.perf_counter() - t
            tokens = seconds = mask = calls = 0.0
            valid = total = 0
            for _ in range(rounds):
                for p in ids:
                    timed = Timed(structured.processor(grammar, None, len(p)))
                    n, s, text = generate(p, timed)
                    tokens, seconds, mask, calls = tokens + n, seconds + s, mask + timed.seconds, calls + timed.calls
                    total += 1
                    try:
                        json.loads(text)
                        valid += 1
                    except json.JSONDecodeError:
                        pass
            out[name] = {"tokens": int(tokens), "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
                         "ratio_to_free": round((tokens / seconds) / out["free"]["tokens_per_s"], 3),
                         "mask_ms_per_token": round(1000 * mask / max(calls, 1), 3),
                         "compile_ms_first": round(1000 * compile_first, 2),
                         "compile_ms_cached": round(1000 * compile_cached, 3),
                         "valid_json": f"{valid}/{total}"}
            progress(f"{name}: {out[name]}")
    finally:
        engine.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="'tiny' (built here) or a model directory.")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "structured_output.json"))
    args = p.parse_args()
    import llguidance
    import torch

    with tempfile.TemporaryDirectory(prefix="charops-bench-") as tmp:
        model_dir = build_tiny(Path(tmp)) if args.model == "tiny" else Path(args.model)
        result = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                  "llguidance": llguidance.__version__, **run(model_dir, args.max_tokens, args.rounds)}
    result["model"] = args.model
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
