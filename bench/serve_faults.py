"""Does the local server stay usable under abusive clients? (issue 19, "done when")

One server (``charops serve``, loopback, short read timeouts), one run:

1. **before**: the latency of ``--requests`` normal chat requests, one after another;
2. **abuse** (bounded: a few hundred requests, ``--seconds`` s): at the same time normal
   requests, streams whose client goes away after two frames, 2 MiB bodies, 200,000-instance
   ``:predict`` requests, idle connections and headers sent a byte at a time;
3. **after**: the same normal requests again.

Aim: after / before p50 at most 1.5 (nothing left running or holding the event loop); every
abusive request ends with its status (413, 408, 429, 503) or a closed connection.

    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_faults.py                 # tiny model, built here
    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_faults.py --model DIR     # a model directory

Progress goes to stderr; the figures are printed and saved to bench/results/serve_faults.json
(or ``--out``). tests/unit/test_serve_faults.py runs :func:`abuse` with smaller counts.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import launch, progress  # noqa: E402 (the bench folder is not a package)

ROOT = Path(__file__).resolve().parents[1]
HELLO = [{"role": "user", "content": "你好"}]


def latencies(url: str, n: int) -> list[float]:
    """Seconds for ``n`` normal chat requests (8 greedy tokens), one after another."""
    import httpx

    out = []
    with httpx.Client(timeout=60) as client:
        for _ in range(n):
            t = time.perf_counter()
            r = client.post(url + "/openai/v1/chat/completions", json={
                "model": "charops-chat", "messages": HELLO, "max_tokens": 8, "min_tokens": 8, "temperature": 0})
            r.raise_for_status()
            out.append(time.perf_counter() - t)
    return out


def _raw(url: str, send, timeout: float) -> str | int:
    """Open a socket, let ``send(sock)`` write, then read until the server closes: the status
    of its answer, or "closed" when it closed without one."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    sock.settimeout(timeout)
    data = b""
    try:
        send(sock)
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return "open"  # still open after the timeout: the server did not cut it off
    finally:
        sock.close()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else "closed"


def abuse(url: str, *, seconds: float = 30, normal: int = 100, streams: int = 30, oversized: int = 20,
          predicts: int = 10, idle: int = 40, slow: int = 20) -> dict:
    """Run every kind of client at once, spread over ``seconds``; the status counts per kind."""
    import httpx

    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    lock = threading.Lock()
    budget = seconds + 30  # every client is bounded by this

    def record(kind: str, status) -> None:
        with lock:
            statuses[kind][status] += 1

    def post(kind: str, path: str, **kw) -> None:
        try:
            r = httpx.post(url + path, timeout=budget, **kw)
            record(kind, r.status_code)
        except httpx.HTTPError:
            record(kind, "closed")

    def chat() -> None:
        post("normal", "/openai/v1/chat/completions",
             json={"model": "charops-chat", "messages": HELLO, "max_tokens": 8})

    def stream_and_leave() -> None:
        try:
            with httpx.stream("POST", url + "/openai/v1/chat/completions", timeout=budget, json={
                    "model": "charops-chat", "messages": HELLO, "max_tokens": 64, "stream": True}) as r:
                record("stream", r.status_code)
                for i, _ in enumerate(r.iter_lines()):
                    if i >= 2:
                        break  # the client goes away mid-stream
        except httpx.HTTPError:
            record("stream", "closed")

    def too_big() -> None:
        post("oversized", "/openai/v1/chat/completions", content=b'{"x": "' + b"a" * (2 << 20) + b'"}',
             headers={"content-type": "application/json"})

    def huge_predict() -> None:
        post("predict", "/v1/models/charops-chat:predict", json={"instances": ["x"] * 200_000})

    def idle_socket() -> None:
        record("idle", _raw(url, lambda s: None, budget))

    def slow_headers() -> None:
        def send(sock):
            for byte in b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n":
                sock.send(bytes([byte]))
                time.sleep(0.5)
        record("slow", _raw(url, send, budget))

    jobs = ([chat] * normal + [stream_and_leave] * streams + [too_big] * oversized + [huge_predict] * predicts
            + [idle_socket] * idle + [slow_headers] * slow)
    random.Random(0).shuffle(jobs)  # the kinds interleaved, the same way every run
    threads = []
    start = time.monotonic()
    for i, job in enumerate(jobs):
        delay = start + seconds * i / max(len(jobs), 1) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=job, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(max(budget - (time.monotonic() - start), 1))
    total: collections.Counter = collections.Counter()
    for c in statuses.values():
        total.update(c)
    return {"requests": len(jobs), "wall_s": time.monotonic() - start, "statuses": dict(total),
            "by_kind": {k: dict(v) for k, v in statuses.items()},
            "unfinished": sum(t.is_alive() for t in threads)}


def summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"p50_s": statistics.median(xs), "p95_s": xs[max(int(len(xs) * 0.95) - 1, 0)], "n": len(xs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model directory (default: the tiny model, built here)")
    p.add_argument("--requests", type=int, default=20, help="normal requests before and after")
    p.add_argument("--seconds", type=float, default=30, help="how long the abuse is spread over (max 60)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_faults.json"))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model:
            model = Path(args.model)
        else:
            from charops.config import load_config
            from charops.model.init import ModelInitConfig, run

            progress("building the tiny model")
            model = work / "tiny"
            run(load_config(ModelInitConfig, "tiny", [f"output_dir={model}"]))
        limits = ["--read-timeout-s", "2", "--keep-alive-s", "2", "--max-connections", "64", "--max-tokens-cap", "64"]
        proc, url = launch(["serve", str(model), *limits], work)
        try:
            latencies(url, 3)  # warm up
            progress(f"before: {args.requests} normal requests")
            before = latencies(url, args.requests)
            progress(f"abuse over {args.seconds:g} s")
            report = abuse(url, seconds=min(args.seconds, 60))
            progress(f"after: {args.requests} normal requests")
            after = latencies(url, args.requests)
        finally:
            proc.terminate()
            proc.wait(30)
    result = {"model": args.model or "tiny", "server_limits": limits, "before": summary(before),
              "after": summary(after), "after_over_before_p50": statistics.median(after) / statistics.median(before),
              "abuse": report}
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
