"""Evaluation throughput: judged pairs/s at judge concurrency 1 vs 8, and eval-stage generation
batched vs one prompt at a time, in one run.

    .venv/bin/python bench/eval_throughput.py
    .venv/bin/python bench/eval_throughput.py --pairs 32 --ttft 0.3 --per-token 0.008 --prompts 24

Judging: a local OpenAI-compatible endpoint on 127.0.0.1 (a threaded ``http.server``) that
answers every chat completion like a hosted judge of the GPT-4o-mini class would in latency:
``--ttft`` seconds before the first token (default 0.30) plus ``--per-token`` seconds per
output token (default 0.008) for a ~40-token JSON verdict, with +-20% seeded jitter, i.e.
~0.6 s a request; it serves any number of requests at once, as a hosted API does. The same
pairs (context + two replies from the bundled samples) go through ``charops.eval.judges``'
OpenAI judge, both presentation orders, with an empty cache each time: once with
``judge_concurrency=1`` and once with ``8``. Reported: judged pairs/s and the ratio.

Generation: the embedded tiny model (built here) replies to the same ``--prompts`` prompts
(validation dialogues of the bundled samples cut before their last reply) with
``charops.eval.generate`` at ``batch_size=8`` and ``batch_size=1``, greedy,
``--max-new-tokens`` each. Reported: replies/s and generated tokens/s and their ratio.

Results are printed and saved to bench/results/eval_throughput.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
VERDICT_TOKENS = 40


class LatencyJudge:
    """OpenAI-compatible /v1/chat/completions with a hosted judge's latency."""

    def __init__(self, ttft: float, per_token: float, seed: int = 0):
        rng = random.Random(seed)
        lock = threading.Lock()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"]
                with lock:
                    outer.requests += 1
                    jitter = rng.uniform(0.8, 1.2)
                time.sleep((ttft + per_token * VERDICT_TOKENS) * jitter)
                # A deterministic verdict from the prompt: the longer reply wins, ties on equal length.
                a = prompt.split("## Reply A", 1)[1].split("## Reply B", 1)[0]
                b = prompt.split("## Reply B", 1)[1].split("Answer with", 1)[0]
                winner = "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"
                text = json.dumps({"winner": winner, "reason": "more in character"})
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}],
                                   "usage": {"prompt_tokens": len(prompt) // 2, "completion_tokens": VERDICT_TOKENS}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def sample_pairs(n: int) -> list[tuple[dict, dict]]:
    """(candidate, baseline) reply records from the bundled dialogues: the real reply vs another
    dialogue's reply of the same character."""
    from charops.io import read_jsonl

    dialogues = [d for d in read_jsonl(ROOT / "src/charops/data/samples/dialogues.jsonl")
                 if sum(t["role"] == "assistant" for t in d["turns"]) >= 1]
    pairs = []
    for i, d in enumerate(dialogues[:n]):
        turns = d["turns"]
        last = max(k for k, t in enumerate(turns) if t["role"] == "assistant")
        other = dialogues[(i + 7) % len(dialogues)]["turns"]
        other_reply = next(t["content"] for t in reversed(other) if t["role"] == "assistant")
        msgs = [{"role": "system", "content": f"你是{d['character']}。"}] + \
            [{"role": t["role"], "content": t["content"]} for t in turns[:last] if t["role"] != "system"]
        base = {"id": d["id"], "character": d["character"], "category": "other", "topic": d.get("topic"),
                "system": msgs[0]["content"], "messages": msgs}
        pairs.append(({**base, "model": "candidate", "reply": turns[last]["content"]},
                      {**base, "model": "baseline", "reply": other_reply}))
    return pairs


def judge_run(url: str, pairs: list, concurrency: int, work: Path) -> dict:
    from charops.eval.judges import openai_judge
    from charops.eval.rubric import load_rubric

    cfg = SimpleNamespace(judge_base_url=url, judge_model="bench-judge", judge_timeout_s=30.0, judge_max_retries=1,
                          judge_backoff_s=0.5, judge_concurrency=concurrency, judge_rate_limit=0.0,
                          judge_max_tokens=128, judge_cache=str(work / f"cache-{concurrency}.jsonl"),
                          output_dir=str(work), metric_subsets=None, pointwise=False, progress=False)
    t0 = time.perf_counter()
    out = openai_judge([], pairs, cfg, load_rubric("characterglm-v1"))
    seconds = time.perf_counter() - t0
    judged = sum(1 for r in out["pairwise"] if r["verdict"] is not None)
    return {"concurrency": concurrency, "pairs": len(pairs), "judged": judged, "requests": 2 * len(pairs),
            "seconds": seconds, "pairs_per_second": judged / seconds,
            "verdicts": {v: sum(1 for r in out["pairwise"] if r["verdict"] == v) for v in ("win", "tie", "lose")}}


def build_model_and_prompts(work: Path, n: int) -> tuple[Path, list[dict]]:
    from charops.config import load_config
    from charops.data.prepare import PrepareConfig
    from charops.data.prepare import run as prepare
    from charops.eval.generate import load_prompts
    from charops.model.init import ModelInitConfig
    from charops.model.init import run as init

    model, data = work / "base", work / "data"
    init(load_config(ModelInitConfig, "tiny", [f"output_dir={model}"]))
    prepare(load_config(PrepareConfig, "default", [f"model={model}", f"output_dir={data}", "progress=false"]))
    return model, load_prompts(data, n)


def generation_run(loaded, prompts: list[dict], batch_size: int, max_new_tokens: int) -> dict:
    from charops.eval.generate import GenerationSettings, generate_replies

    _, stats = generate_replies(loaded, "candidate", prompts,
                                GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size))
    return {"batch_size": batch_size, "replies": stats["replies"], "new_tokens": stats["new_tokens"],
            "seconds": stats["seconds"], "replies_per_second": stats["replies"] / stats["seconds"],
            "tokens_per_second": stats["tokens_per_second"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=24, help="pairs judged (two requests each)")
    ap.add_argument("--ttft", type=float, default=0.30, help="endpoint seconds before the first token")
    ap.add_argument("--per-token", type=float, default=0.008, help="endpoint seconds per output token")
    ap.add_argument("--prompts", type=int, default=16, help="prompts generated for")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_throughput.json"))
    args = ap.parse_args(argv)

    import torch

    from charops.eval.generate import load_model

    result: dict = {"endpoint": {"kind": "local OpenAI-compatible http.server on 127.0.0.1",
                                 "latency": f"{args.ttft:g} s to first token + {args.per_token:g} s x "
                                            f"{VERDICT_TOKENS} tokens, +-20% jitter (~{args.ttft + args.per_token * VERDICT_TOKENS:.2f} s)",
                                 "models_like": "a hosted GPT-4o-mini-class judge"},
                    "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="charops-bench-eval-") as tmp:
        work = Path(tmp)
        pairs = sample_pairs(args.pairs)
        with LatencyJudge(args.ttft, args.per_token) as server:
            runs = [judge_run(server.url, pairs, c, work) for c in (1, 8)]
        result["judge"] = {"runs": runs, "speedup_8_vs_1": runs[1]["pairs_per_second"] / runs[0]["pairs_per_second"]}
        print(f"judge: {runs[0]['pairs_per_second']:.2f} pairs/s at concurrency 1, "
              f"{runs[1]['pairs_per_second']:.2f} at 8 -> {result['judge']['speedup_8_vs_1']:.2f}x", file=sys.stderr)

        model, prompts = build_model_and_prompts(work, args.prompts)
        loaded = load_model(str(model))
        generation_run(loaded, prompts[:2], 2, 4)  # warm-up (first-call allocations)
        gen = [generation_run(loaded, prompts, b, args.max_new_tokens) for b in (8, 1)]
        result["generation"] = {"model": "charops model init --config tiny (random weights)", "runs": gen,
                                "max_new_tokens": args.max_new_tokens,
                                "speedup_tokens_per_s_batched_vs_single": gen[0]["tokens_per_second"] / gen[1]["tokens_per_second"]}
        print(f"generation: {gen[0]['tokens_per_second']:.1f} tokens/s batched (8), {gen[1]['tokens_per_second']:.1f} "
              f"one at a time -> {result['generation']['speedup_tokens_per_s_batched_vs_single']:.2f}x", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
