"""Serving latency: the local server (``charops deploy --model``) vs. ``generate`` in one process.

One run, one model, the same settings on both sides (greedy, repetition penalty 1.1, exactly
``--tokens`` new tokens, the character's profile as system prompt):

- p50/p95 latency and tokens/s of sequential requests through the server (openai SDK,
  non-streaming) vs. calling ``model.generate`` directly in this process (aim: at most 1.2x);
- time to the first streamed token (SSE) and the whole streamed reply;
- throughput of 8 concurrent clients vs. the same 8 requests one after another (aim: at least
  3x, from dynamic batching).

    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_latency.py              # tiny model, built here
    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_latency.py --model runs/dpo/model --reps 30

The server runs with the same OMP_NUM_THREADS as this process and is idle while the direct
calls are timed. Results are printed and saved to bench/results/serve_latency.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "charops" / "data" / "samples" / "characters.jsonl"
QUESTION = "你好！今天训练累不累？给我讲讲你年轻时候打比赛的事吧。"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(xs: list[float]) -> dict:
    return {"p50_s": pct(xs, 0.5), "p95_s": pct(xs, 0.95), "mean_s": statistics.fmean(xs), "n": len(xs)}


def batch_stats(url: str) -> tuple[float, float]:
    """(generate calls, requests served) so far, from the server's Prometheus histogram."""
    import httpx

    lines = httpx.get(url + "/metrics", timeout=10).text.splitlines()
    value = {ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.startswith("charops_serve_batch_size_")
             and not ln.startswith("charops_serve_batch_size_bucket")}
    return value["charops_serve_batch_size_count"], value["charops_serve_batch_size_sum"]


def build_model(work: Path) -> Path:
    from charops.config import load_config
    from charops.model.init import ModelInitConfig, run

    out = work / "model"
    run(load_config(ModelInitConfig, "tiny", [f"output_dir={out}"]))
    shutil.copy(SAMPLES, out / "characters.jsonl")
    return out


def start_server(model: Path, work: Path, batch: int) -> tuple[subprocess.Popen, str, Path]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = work / "server.log"
    charops = Path(sys.executable).parent / "charops"
    proc = subprocess.Popen([str(charops), "deploy", "bench", "--model", str(model), "--port", str(port),
                             "--max-batch-size", str(batch)], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while "charops: serving" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}", log


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="Model directory with characters.jsonl (default: a tiny model built here).")
    p.add_argument("--tokens", type=int, default=32, help="New tokens per request.")
    p.add_argument("--reps", type=int, default=20, help="Timed requests per sequential measurement.")
    p.add_argument("--clients", type=int, default=8, help="Concurrent clients.")
    p.add_argument("--rounds", type=int, default=3, help="Concurrent/sequential rounds (the median is reported).")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_latency.json"))
    args = p.parse_args()

    import openai
    import torch

    from charops.serve.characters import load_characters
    from charops.serve.server import load_model

    work = Path(tempfile.mkdtemp(prefix="charops-bench-serve-"))
    proc = None
    try:
        model_dir = Path(args.model) if args.model else build_model(work)
        chars = load_characters(model_dir)
        character = next(iter(chars.values()))
        messages = [{"role": "system", "content": character.system_prompt}, {"role": "user", "content": QUESTION}]
        settings = {"temperature": 0, "max_tokens": args.tokens, "repetition_penalty": 1.1}

        # --- direct: generate() in this process -------------------------------------------
        model, tok = load_model(model_dir)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], device=model.device)

        def direct() -> float:
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                     repetition_penalty=1.1, pad_token_id=tok.pad_token_id,
                                     eos_token_id=model.generation_config.eos_token_id)
            tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            assert out.shape[1] - ids.shape[1] == args.tokens
            return time.perf_counter() - t0

        n_params = sum(p.numel() for p in model.parameters())

        # --- server ------------------------------------------------------------------------
        proc, url, _ = start_server(model_dir, work, args.clients)
        client = openai.OpenAI(base_url=url + "/openai/v1", api_key="none", max_retries=0, timeout=120)
        extra = {"min_tokens": args.tokens, "repetition_penalty": 1.1}
        bodies = {  # the character (its profile is the system prompt), and a bare short message
            "character": {"model": f"bench:{character.name}", "messages": [messages[1]]},
            "short": {"model": "bench", "messages": [{"role": "user", "content": "你好"}]},
        }
        for b in bodies.values():
            b.update(max_tokens=args.tokens, temperature=0, extra_body=extra)

        def request(kind: str = "character") -> float:
            t0 = time.perf_counter()
            r = client.chat.completions.create(**bodies[kind])
            assert r.usage.completion_tokens == args.tokens
            assert kind != "character" or r.usage.prompt_tokens == ids.shape[1]
            return time.perf_counter() - t0

        def streamed() -> tuple[float, float]:
            t0 = time.perf_counter()
            first = None
            for chunk in client.chat.completions.create(stream=True, **bodies["character"]):
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - t0
            return first if first is not None else float("nan"), time.perf_counter() - t0

        # Other jobs share the CPUs and their load drifts: the direct call, the server request
        # and the streamed request take turns, so each series sees the same contention.
        for _ in range(3):
            direct(), request(), streamed()
        direct_s, server_s, stream = [], [], []
        for _ in range(args.reps):
            direct_s.append(direct())
            server_s.append(request())
            stream.append(streamed())

        def sequential(kind: str) -> float:
            t0 = time.perf_counter()
            for _ in range(args.clients):
                request(kind)
            return time.perf_counter() - t0

        def concurrent(kind: str) -> float:
            # The clients start together (a barrier), as a burst of users would.
            barrier = threading.Barrier(args.clients + 1)

            def client_thread() -> None:
                barrier.wait()
                request(kind)

            threads = [threading.Thread(target=client_thread) for _ in range(args.clients)]
            for t in threads:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            return time.perf_counter() - t0

        throughput = {}
        for kind in bodies:
            concurrent(kind)  # warm-up: the client opens its 8 keep-alive connections
            seq, conc, calls, served = [], [], 0.0, 0.0
            for _ in range(args.rounds):
                seq.append(sequential(kind))
                before = batch_stats(url)
                conc.append(concurrent(kind))
                after = batch_stats(url)
                calls, served = calls + after[0] - before[0], served + after[1] - before[1]
            n_tokens = args.clients * args.tokens
            throughput[kind] = {
                "prompt": "character profile + question" if kind == "character" else "one short user message",
                "sequential_wall_s_median": statistics.median(seq),
                "sequential_tokens_per_s": n_tokens / statistics.median(seq),
                "concurrent_wall_s_median": statistics.median(conc),
                "concurrent_tokens_per_s": n_tokens / statistics.median(conc),
                "concurrent_over_sequential": statistics.median(seq) / statistics.median(conc),
                "concurrent_mean_batch_size": served / max(calls, 1),
            }
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)

    d, s = summary(direct_s), summary(server_s)
    result = {
        "model": str(args.model or "tiny (charops model init --config tiny)"),
        "parameters": n_params,
        "settings": {**settings, "new_tokens": args.tokens, "reps": args.reps, "clients": args.clients,
                     "rounds": args.rounds, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                     "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                     "load_average_at_end": os.getloadavg(),
                     "prompt_tokens": int(ids.shape[1]), "character": character.name},
        "direct_generate": {**d, "tokens_per_s": args.tokens / d["p50_s"]},
        "server": {**s, "tokens_per_s": args.tokens / s["p50_s"]},
        "server_over_direct_p50": s["p50_s"] / d["p50_s"],
        "server_over_direct_p95": s["p95_s"] / d["p95_s"],
        "streaming": {"first_token": summary([a for a, _ in stream]), "whole_reply": summary([b for _, b in stream])},
        "throughput": throughput,
        "aims": {"server_over_direct_p50_max": 1.2, "concurrent_over_sequential_min": 3.0},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"prompt {ids.shape[1]} tokens, {args.tokens} new tokens, {torch.get_num_threads()} thread(s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"direct generate : p50 {d['p50_s'] * 1e3:7.1f} ms  p95 {d['p95_s'] * 1e3:7.1f} ms  "
          f"{result['direct_generate']['tokens_per_s']:.0f} tok/s")
    print(f"server (SDK)    : p50 {s['p50_s'] * 1e3:7.1f} ms  p95 {s['p95_s'] * 1e3:7.1f} ms  "
          f"{result['server']['tokens_per_s']:.0f} tok/s  -> {result['server_over_direct_p50']:.2f}x direct (p50)")
    ft = result["streaming"]["first_token"]
    print(f"first streamed token: p50 {ft['p50_s'] * 1e3:.1f} ms  p95 {ft['p95_s'] * 1e3:.1f} ms")
    for kind, t in throughput.items():
        print(f"{kind:>9}: {args.clients} sequential {t['sequential_tokens_per_s']:.0f} tok/s, {args.clients} concurrent "
              f"{t['concurrent_tokens_per_s']:.0f} tok/s -> {t['concurrent_over_sequential']:.2f}x "
              f"(mean batch {t['concurrent_mean_batch_size']:.1f})")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
