"""Benchmark the registry's stage history under contention: promotions per second and lost races.

One run, one store: ``--rounds`` production promotions of random versions by one process, then
by ``--promoters`` processes racing (each the same number of rounds), on a local directory (a
fresh temporary one) or on the S3 store named by ``--store``. Reports the throughput of each,
their ratio, how many conditional creates lost a race (and were retried against the new last
event), and checks the history afterwards (one line, one production version per state).

    .venv/bin/python bench/registry_race.py                  # local directory
    CHAROPS_S3_ENDPOINT=http://127.0.0.1:8333 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
        .venv/bin/python bench/registry_race.py --store s3://bucket/bench
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import tempfile
import time
import uuid
from pathlib import Path

from charops.io import write_json
from charops.registry import history, register, transition
from charops.storage import open_store

ROOT = Path(__file__).resolve().parent
VERSIONS = 4


def _promoter(url: str, name: str, seed: int, rounds: int, queue) -> None:
    store = open_store(url)
    real, lost = store.put_json_if_absent, 0

    def counting(key, obj):  # counts the creates that found the key taken
        nonlocal lost
        info = real(key, obj)
        lost += info is None
        return info

    store.put_json_if_absent = counting
    rng = random.Random(seed)
    start = time.perf_counter()
    for i in range(rounds):
        transition(store, name, rng.randint(1, VERSIONS), "production", actor=f"bench-{seed}",
                   reason=f"round {i}")
    queue.put({"seconds": time.perf_counter() - start, "lost": lost})


def _phase(url: str, name: str, promoters: int, rounds: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_promoter, args=(url, name, 100 + i, rounds, queue))
             for i in range(promoters)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    wall = max(r["seconds"] for r in results)
    return {"promoters": promoters, "transitions": promoters * rounds, "seconds": wall,
            "per_second": promoters * rounds / wall, "lost_races": sum(r["lost"] for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="", help="Store URL (default: a fresh temporary directory).")
    ap.add_argument("--promoters", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=100, help="Promotions per promoter.")
    ap.add_argument("--out", default=str(ROOT / "results" / "registry_race.json"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="charops-bench-registry-")
    url = args.store or str(Path(tmp) / "store")
    store = open_store(url)
    name = "bench-" + uuid.uuid4().hex[:8]
    for v in range(1, VERSIONS + 1):
        model = Path(tmp) / f"m{v}"
        model.mkdir()
        (model / "config.json").write_text("{}\n")
        (model / "model.safetensors").write_bytes(f"weights {v}".encode())
        register(store, model, name, {}, {})
    transition(store, name, 1, "production", actor="bench", reason="start")

    alone = _phase(url, name, 1, args.rounds)
    racing = _phase(url, name, args.promoters, args.rounds)
    events = history(store, name)  # raises if the line is broken
    one_production = all(sum(s == "production" for s in e["stages"].values()) == 1 for e in events)
    result = {"store": store.url if args.store else "local temporary directory",
              "versions": VERSIONS, "alone": alone, "racing": racing,
              "racing_vs_alone_throughput": racing["per_second"] / alone["per_second"],
              "events": len(events), "history_one_line": True,
              "one_production_in_every_state": one_production}
    print(json.dumps(result, indent=2))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
