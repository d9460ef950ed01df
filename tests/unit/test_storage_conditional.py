"""Conditional create (``put_json_if_absent``) on both stores: what the registry's stage history
relies on. The S3 tests run against a real server (SeaweedFS ``weed mini``, the s3_server
fixture), so they check that the server honours ``If-None-Match: *``, atomically.

    .venv/bin/python -m pytest tests/unit/test_storage_conditional.py -x -q
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import pytest

from charops.storage.local import LocalStore


@pytest.fixture
def store(local_and_s3_store):
    return local_and_s3_store  # tests/conftest.py: local, then S3 (prefix "charops")


def test_create_then_refuse_keeps_the_first(store):
    info = store.put_json_if_absent("h/1.json", {"who": "first"})
    assert info is not None and info.size > 0
    assert store.put_json_if_absent("h/1.json", {"who": "second"}) is None
    assert store.get_json("h/1.json") == {"who": "first"}
    # A plain put still overwrites (the condition is per request, not a property of the key).
    store.put_json("h/1.json", {"who": "third"})
    assert store.get_json("h/1.json") == {"who": "third"}
    # After a delete the key can be created again.
    store.delete("h/1.json")
    assert store.put_json_if_absent("h/1.json", {"who": "fourth"}) is not None
    assert store.get_json("h/1.json") == {"who": "fourth"}


def test_concurrent_creators_exactly_one_wins(store):
    """16 writers, 20 keys: each key is won by exactly one, and holds the winner's object."""
    for key_no in range(20):
        key = f"race/{key_no}.json"
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda w, k=key: (w, store.put_json_if_absent(k, {"w": w})),
                                    range(16)))
        winners = [w for w, info in results if info is not None]
        assert len(winners) == 1, (key, winners)
        assert store.get_json(key) == {"w": winners[0]}


def _local_racer(root: str, worker: int, keys: int, queue) -> None:
    store = LocalStore(root)
    queue.put((worker, [k for k in range(keys) if store.put_json_if_absent(f"k/{k}.json", {"w": worker})]))


def test_local_creators_in_separate_processes(tmp_path):
    """link(2) as compare-and-swap holds between processes, not only threads."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_local_racer, args=(str(tmp_path / "s"), w, 200, queue))
             for w in range(3)]
    for p in procs:
        p.start()
    won = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    all_won = sorted(k for ks in won.values() for k in ks)
    assert all_won == list(range(200))  # every key won once, none twice
    store = LocalStore(tmp_path / "s")
    for worker, ks in won.items():
        for k in ks[:20]:
            assert store.get_json(f"k/{k}.json") == {"w": worker}
    assert not [p for p in (tmp_path / "s" / "k").iterdir() if p.name.endswith(".tmp")]
