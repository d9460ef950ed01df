"""Serving latency of the local server (``charops deploy --model``) with a full character prompt.

For each model, in one run, against one server (openai SDK, greedy, repetition penalty 1.1,
exactly the asked number of new tokens), with a character whose language is the model's and
the character's rendered profile (~800 tokens on the tiny model's tokenizer) as system prompt:

- **prefix cache**: time to the first streamed token when the profile's KV is cached (the same
  character, another question) vs. uncached (the same profile behind a per-request nonce, so no
  prefix is shared). Aim: cached at most 1/3 of uncached.
- **continuous batching**: 8 concurrent clients vs. the same 8 requests one after another
  (tokens/s, median of ``--rounds``), twice: ``same`` (8 copies of one request, as the earlier
  runs of this bench measured it; the aim: at least 3x) and ``distinct`` (each client its own
  question, so each prefills its own ~30 tokens after the cached profile).
- **short behind long**: the p95 latency of short requests sent one after another while a long
  request (``--max-tokens-cap`` tokens) is decoding, vs. the same short requests alone. Aim: at
  most 2x (a static batch would make them wait for the whole long reply).

    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_latency.py                     # tiny model, built here
    charops model import charops:smollm2-135m --output /tmp/smollm2               # ~30 s the first time
    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_latency.py --model tiny --model /tmp/smollm2

``--model`` may be given several times (``tiny`` builds the tiny model). A model directory
without ``characters.jsonl`` is served through a folder of links plus the sample characters
(``src/charops/data/samples``). The server runs with the same OMP_NUM_THREADS as this process.
Progress goes to stderr; the figures are printed and saved to bench/results/serve_latency.json
(or ``--out``).
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
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "charops" / "data" / "samples" / "characters.jsonl"
QUESTIONS = {"zh": "你好！今天训练累不累？给我讲讲你年轻时候的事吧。",
             "en": "Hello! Long day? Tell me about something you did when you were young."}
CHARACTERS_FILE = "characters.jsonl"


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(xs: list[float]) -> dict:
    return {"p50_s": pct(xs, 0.5), "p95_s": pct(xs, 0.95), "mean_s": statistics.fmean(xs), "n": len(xs)}


def batch_stats(url: str) -> tuple[float, float]:
    """(decoding steps, rows decoded) so far, from the server's Prometheus histogram."""
    import httpx

    lines = httpx.get(url + "/metrics", timeout=10).text.splitlines()
    value = {ln.split()[0]: float(ln.split()[1]) for ln in lines if ln.startswith("charops_serve_batch_size_")
             and not ln.startswith("charops_serve_batch_size_bucket")}
    return value.get("charops_serve_batch_size_count", 0.0), value.get("charops_serve_batch_size_sum", 0.0)


def build_tiny(work: Path) -> Path:
    from charops.config import load_config
    from charops.model.init import ModelInitConfig, run

    out = work / "tiny"
    run(load_config(ModelInitConfig, "tiny", [f"output_dir={out}"]))
    shutil.copy(SAMPLES, out / CHARACTERS_FILE)
    return out


def with_characters(model_dir: Path, work: Path) -> Path:
    """``model_dir`` itself if it has characters, else a folder of links to it plus the samples."""
    if (model_dir / CHARACTERS_FILE).is_file():
        return model_dir
    view = work / f"{model_dir.name}-with-characters"
    view.mkdir()
    for f in model_dir.iterdir():
        (view / f.name).symlink_to(f.resolve())
    shutil.copy(SAMPLES, view / CHARACTERS_FILE)
    return view


def model_language(tok) -> str:
    """zh when the tokenizer knows Chinese (a character costs at most ~1.5 tokens), else en."""
    text = QUESTIONS["zh"]
    return "zh" if len(tok(text, add_special_tokens=False)["input_ids"]) <= 1.5 * len(text) else "en"


def start_server(model: Path, work: Path, args) -> tuple[subprocess.Popen, str]:
    return launch(["deploy", "bench", "--model", str(model), "--max-batch-size", str(args.clients),
                   "--max-tokens-cap", str(args.long_tokens)], work)


def launch(charops_args: list[str], work: Path) -> tuple[subprocess.Popen, str]:
    """``charops ARGS --port P`` on a free loopback port, once it says it serves: (process, URL).
    (bench/serve_faults.py starts its server with it too.)"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = work / f"server-{port}.log"
    charops = Path(sys.executable).parent / "charops"
    proc = subprocess.Popen([str(charops), *charops_args, "--port", str(port)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "charops: serving" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}"


def bench_model(label: str, model_dir: Path, work: Path, args) -> dict:
    import openai

    from charops.model.load import load_tokenizer
    from charops.serve.characters import load_characters

    model_dir = with_characters(model_dir, work)
    tok = load_tokenizer(model_dir)
    lang = model_language(tok)
    chars = load_characters(model_dir)
    character = next((c for c in chars.values() if c.profile.language == lang), next(iter(chars.values())))
    question = QUESTIONS[lang]
    profile_tokens = len(tok(character.system_prompt, add_special_tokens=False)["input_ids"])
    progress(f"{label}: character {character.name} ({lang}), profile {profile_tokens} tokens; starting the server")
    proc, url = start_server(model_dir, work, args)
    try:
        client = openai.OpenAI(base_url=url + "/openai/v1", api_key="none", max_retries=0, timeout=600)
        counter = iter(range(10**9))

        def body(tokens: int, cached: bool = True, same: bool = False) -> dict:
            # A new question each time ("#i" first), so only the profile and the chat template
            # before the user's turn are shared between requests (unless ``same``).
            user = {"role": "user", "content": question if same else f"#{next(counter)} {question}"}
            common = {"max_tokens": tokens, "temperature": 0,
                      "extra_body": {"min_tokens": tokens, "repetition_penalty": 1.1}}
            if cached:
                return {"model": f"bench:{character.name}", "messages": [user], **common}
            # The same profile as a client system message behind a nonce: no shared prefix.
            system = {"role": "system", "content": f"[{uuid.uuid4().hex[:8]}] {character.system_prompt}"}
            return {"model": "bench", "messages": [system, user], **common}

        def request(tokens: int, same: bool = False) -> float:
            t0 = time.perf_counter()
            r = client.chat.completions.create(**body(tokens, same=same))
            assert r.usage.completion_tokens == tokens, r.usage
            return time.perf_counter() - t0

        def first_token(cached: bool) -> tuple[float, int]:
            t0 = time.perf_counter()
            stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                    **body(args.ttft_tokens, cached))
            first, prompt_tokens = None, 0
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - t0
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
            return (first if first is not None else float("nan")), prompt_tokens

        progress(f"{label}: warm-up")
        for _ in range(2):
            request(args.tokens)
            first_token(False)

        # --- prefix cache: time to first token, cached vs uncached, taking turns ------------
        cached_s, uncached_s, lengths = [], [], {}
        for i in range(args.reps):
            a, lengths["uncached"] = first_token(False)
            b, lengths["cached"] = first_token(True)
            uncached_s.append(a)
            cached_s.append(b)
            progress(f"{label}: TTFT {i + 1}/{args.reps}: uncached {a * 1e3:.0f} ms, cached {b * 1e3:.0f} ms")
        ttft = {"prompt_tokens": lengths, "uncached": summary(uncached_s), "cached": summary(cached_s),
                "cached_over_uncached_p50": statistics.median(cached_s) / statistics.median(uncached_s)}

        # --- continuous batching: 8 concurrent vs 8 sequential -------------------------------
        def sequential(same: bool) -> float:
            t0 = time.perf_counter()
            for _ in range(args.clients):
                request(args.tokens, same)
            return time.perf_counter() - t0

        def concurrent(same: bool) -> float:
            barrier = threading.Barrier(args.clients + 1)  # the clients start together, as a burst

            def one() -> None:
                barrier.wait()
                request(args.tokens, same)

            threads = [threading.Thread(target=one) for _ in range(args.clients)]
            for t in threads:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            return time.perf_counter() - t0

        concurrent(True)  # warm-up: the client opens its keep-alive connections
        throughput = {}
        for kind in ("same", "distinct"):
            seq, conc, steps, rows = [], [], 0.0, 0.0
            for i in range(args.rounds):
                seq.append(sequential(kind == "same"))
                before = batch_stats(url)
                conc.append(concurrent(kind == "same"))
                after = batch_stats(url)
                steps, rows = steps + after[0] - before[0], rows + after[1] - before[1]
                progress(f"{label}: {kind} round {i + 1}/{args.rounds}: {args.clients} sequential {seq[-1]:.2f} s, "
                         f"concurrent {conc[-1]:.2f} s")
            n_tokens = args.clients * args.tokens
            throughput[kind] = {
                "requests": "8 copies of one request" if kind == "same" else "each client its own question",
                "sequential_wall_s_median": statistics.median(seq),
                "concurrent_wall_s_median": statistics.median(conc),
                "sequential_tokens_per_s": n_tokens / statistics.median(seq),
                "concurrent_tokens_per_s": n_tokens / statistics.median(conc),
                "concurrent_over_sequential": statistics.median(seq) / statistics.median(conc),
                "concurrent_mean_rows_per_step": rows / max(steps, 1),
            }

        # --- a short request while a long one decodes ---------------------------------------
        alone = [request(args.short_tokens) for _ in range(args.short_reps)]
        progress(f"{label}: short alone p95 {pct(alone, 0.95) * 1e3:.0f} ms; now with a long request running")
        started, stop_long = threading.Event(), threading.Event()
        long_info: dict = {}

        def long_request() -> None:
            t0 = time.perf_counter()
            stream = client.chat.completions.create(stream=True, **body(args.long_tokens))
            got = 0
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got += 1
                    started.set()
                if stop_long.is_set():
                    break
            stream.close()  # the server cancels the rest of the long reply
            long_info.update(seconds=time.perf_counter() - t0, chunks=got,
                             finished=chunk.choices[0].finish_reason if chunk.choices else None)

        t = threading.Thread(target=long_request)
        t.start()
        started.wait(600)
        beside = [request(args.short_tokens) for _ in range(args.short_reps)]
        still_running = t.is_alive()
        stop_long.set()
        t.join()
        short = {"short_tokens": args.short_tokens, "long_tokens": args.long_tokens, "alone": summary(alone),
                 "with_long_running": summary(beside), "long_still_running_after_the_shorts": still_running,
                 "long_request_seconds": long_info.get("seconds"),
                 "p95_with_long_over_alone": pct(beside, 0.95) / pct(alone, 0.95)}
        progress(f"{label}: short beside long p95 {pct(beside, 0.95) * 1e3:.0f} ms")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"model": str(model_dir), "character": character.name, "language": lang,
            "profile_tokens": profile_tokens, "ttft": ttft, "throughput": throughput, "short_beside_long": short}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="'tiny' (built here) or a model directory; repeatable (default: tiny).")
    p.add_argument("--tokens", type=int, default=32, help="New tokens per request in the throughput test.")
    p.add_argument("--ttft-tokens", type=int, default=4, help="New tokens per time-to-first-token request.")
    p.add_argument("--reps", type=int, default=6, help="Time-to-first-token requests of each kind.")
    p.add_argument("--clients", type=int, default=8, help="Concurrent clients (and the server's batch size).")
    p.add_argument("--rounds", type=int, default=2, help="Sequential/concurrent rounds (the median is reported).")
    p.add_argument("--short-tokens", type=int, default=8, help="New tokens of a short request.")
    p.add_argument("--short-reps", type=int, default=8, help="Short requests alone and beside the long one.")
    p.add_argument("--long-tokens", type=int, default=1024, help="Longest reply of the long request (cut when the shorts are done).")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_latency.json"))
    args = p.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="charops-bench-serve-"))
    results: dict = {}
    t0 = time.perf_counter()
    try:
        for spec in args.model or ["tiny"]:
            if spec == "tiny":
                progress("building the tiny model")
                label, model_dir = "tiny", build_tiny(work)
            else:
                label, model_dir = Path(spec).name, Path(spec)
            results[label] = bench_model(label, model_dir, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
            "wall_s": time.perf_counter() - t0},
        "aims": {"ttft_cached_over_uncached_max": 1 / 3, "concurrent_over_sequential_same_min": 3.0,
                 "short_p95_with_long_over_alone_max": 2.0},
        "models": results,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    for label, r in results.items():
        tt, sb = r["ttft"], r["short_beside_long"]
        print(f"== {label}: {r['character']} ({r['language']}), prompt {tt['prompt_tokens'].get('cached')} tokens "
              f"(profile {r['profile_tokens']})")
        print(f"  TTFT      uncached p50 {tt['uncached']['p50_s'] * 1e3:7.1f} ms, cached p50 "
              f"{tt['cached']['p50_s'] * 1e3:7.1f} ms -> {tt['cached_over_uncached_p50']:.2f} (aim <= 0.33)")
        for kind, th in r["throughput"].items():
            print(f"  {kind:>8}: {args.clients} sequential {th['sequential_tokens_per_s']:.1f} tok/s, concurrent "
                  f"{th['concurrent_tokens_per_s']:.1f} tok/s -> {th['concurrent_over_sequential']:.2f}x"
                  f"{' (aim >= 3)' if kind == 'same' else ''}, {th['concurrent_mean_rows_per_step']:.1f} rows/step")
        print(f"  short ({sb['short_tokens']} tokens) p95 alone {sb['alone']['p95_s'] * 1e3:.0f} ms, beside a long "
              f"reply {sb['with_long_running']['p95_s'] * 1e3:.0f} ms -> {sb['p95_with_long_over_alone']:.2f}x "
              f"(aim <= 2; p50 {sb['with_long_running']['p50_s'] / sb['alone']['p50_s']:.2f}x; the long request "
              f"ran {sb['long_request_seconds']:.1f} s and was still running: {sb['long_still_running_after_the_shorts']})")
    print(f"saved {path} ({out['settings']['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
