"""Registry stages: transitions, the append-only history, rollback, and promoters racing.

The race tests run two processes promoting for many rounds against the local directory store
and against a real S3 server (SeaweedFS ``weed mini``, the s3_server fixture), while a third
reader watches: the history must stay one line and one production version must exist at every
moment.

    .venv/bin/python -m pytest tests/unit/test_registry_stages.py -x -q
"""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path

import pytest

from charops.registry import (
    RegistryError,
    current_actor,
    history,
    production,
    register,
    rollback,
    stage_of,
    stages,
    transition,
)
from charops.registry.stages import event_key
from charops.storage.local import LocalStore
from charops.storage.s3 import S3Store

LINEAGE = {"dataset_sha256": "d" * 64, "base_model": "charops:tiny", "pipeline_version": "p1",
           "run_id": "r1", "run_name": "run-1"}


def _model(root: Path, weights: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "qwen2"}\n', encoding="utf-8")
    (root / "model.safetensors").write_bytes(weights)
    return root


def _register(store, tmp_path: Path, n: int, name: str = "m") -> None:
    for i in range(1, n + 1):
        register(store, _model(tmp_path / f"src-{name}-{i}", f"w{i}".encode()), name, {}, LINEAGE)


@pytest.fixture
def store(tmp_path) -> LocalStore:
    s = LocalStore(tmp_path / "store")
    _register(s, tmp_path, 3)
    return s


def test_stages_move_and_production_is_unique(store):
    assert stage_of(store, "m", 1) == "none" and production(store, "m") is None
    e1 = transition(store, "m", 1, "staging", actor="ana", reason="try it")
    assert (e1["seq"], e1["from"], e1["to"], e1["parent"]) == (1, "none", "staging", None)
    e2 = transition(store, "m", 1, "production", actor="ana", reason="good")
    assert production(store, "m")["version"] == 1 and e2["parent"] == e1["id"]
    # Promoting another version archives the current production one in the same event.
    e3 = transition(store, "m", "2", "production", actor="bo", reason="better")
    assert e3["changes"] == [{"version": 2, "from": "none", "to": "production"},
                             {"version": 1, "from": "production", "to": "archived"}]
    assert stages(store, "m") == {1: "archived", 2: "production"}
    assert stage_of(store, "m", 3) == "none"
    assert [(e["seq"], e["version"], e["to"], e["actor"]) for e in history(store, "m")] == [
        (1, 1, "staging", "ana"), (2, 1, "production", "ana"), (3, 2, "production", "bo")]
    # The history is what is stored: one object per event.
    assert store.get_json(event_key("m", 3)) == e3


def test_a_move_to_the_current_stage_is_a_noop(store):
    first = transition(store, "m", 1, "production", actor="a", reason="")
    again = transition(store, "m", 1, "production", actor="b", reason="retry")
    assert again == first and len(history(store, "m")) == 1


def test_disallowed_moves_and_bad_input_are_one_line_errors(store):
    transition(store, "m", 1, "production", actor="a", reason="")
    with pytest.raises(RegistryError, match="v1 is production: it can move to archived, not staging"):
        transition(store, "m", 1, "staging", actor="a", reason="")
    with pytest.raises(RegistryError, match="stage 'none'"):
        transition(store, "m", 2, "none", actor="a", reason="")
    with pytest.raises(RegistryError, match="has no version 9"):
        transition(store, "m", 9, "staging", actor="a", reason="")
    with pytest.raises(RegistryError, match="has no version 9"):
        stage_of(store, "m", 9)
    for bad in ("0", "-1", "1.5", "../1", "1/2", "latest"):
        with pytest.raises(RegistryError, match="positive integer"):
            transition(store, "m", bad, "staging", actor="a", reason="")
    with pytest.raises(RegistryError, match="needs --reason"):
        transition(store, "m", 2, "production", actor="a", reason=" ", force=True)
    assert len(history(store, "m")) == 1


def test_archive_then_restage(store):
    transition(store, "m", 1, "staging", actor="a", reason="")
    transition(store, "m", 1, "archived", actor="a", reason="stale")
    assert history(store, "m")[-1]["kind"] == "archive"
    transition(store, "m", 1, "staging", actor="a", reason="again")
    assert stage_of(store, "m", 1) == "staging"


def test_rollback_returns_to_the_previous_production_version(store):
    with pytest.raises(RegistryError, match="no production version"):
        rollback(store, "m", actor="a", reason="")
    transition(store, "m", 1, "production", actor="a", reason="")
    with pytest.raises(RegistryError, match="first production version"):
        rollback(store, "m", actor="a", reason="")
    transition(store, "m", 2, "production", actor="a", reason="")
    transition(store, "m", 3, "production", actor="a", reason="")
    back = rollback(store, "m", actor="ops", reason="v3 misbehaves")
    assert back["version"] == 2 and production(store, "m")["version"] == 2
    last = history(store, "m")[-1]
    assert last["kind"] == "rollback" and last["reason"] == "v3 misbehaves"
    assert last["changes"] == [{"version": 2, "from": "archived", "to": "production"},
                               {"version": 3, "from": "production", "to": "archived"}]
    assert stages(store, "m") == {1: "archived", 2: "production", 3: "archived"}
    # Rolling back again returns to what was production before v2 came back: v3.
    assert rollback(store, "m", actor="ops", reason="no, v3")["version"] == 3


def test_a_broken_history_is_reported_not_papered_over(store):
    for v in (1, 2, 3):
        transition(store, "m", v, "production", actor="a", reason="")
    store.delete(event_key("m", 2))
    with pytest.raises(RegistryError, match="inconsistent at event 2"):
        history(store, "m")


def test_actor_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CHAROPS_ACTOR", "ci-bot")
    assert current_actor() == "ci-bot"
    monkeypatch.delenv("CHAROPS_ACTOR")
    assert current_actor()  # the login name


# --- racing promoters --------------------------------------------------------------------

VERSIONS = 4
ROUNDS = 40


def _open(spec: dict):
    if spec["kind"] == "local":
        return LocalStore(spec["root"])
    return S3Store(spec["endpoint"], spec["bucket"], spec["access_key"], spec["secret_key"],
                   secure=False, prefix="reg")


def _promoter(spec: dict, worker: int, seed: int, queue) -> None:
    """Promote random versions to production ROUNDS times; report the events this one made."""
    store, rng, made = _open(spec), random.Random(seed), []
    for i in range(ROUNDS):
        version = rng.randint(1, VERSIONS)
        event = transition(store, "m", version, "production", actor=f"w{worker}", reason=f"r{i}")
        if event["actor"] == f"w{worker}" and event["reason"] == f"r{i}":
            made.append(event["id"])
    queue.put((worker, made))


def _race(spec: dict) -> None:
    store = _open(spec)
    transition(store, "m", 1, "production", actor="setup", reason="")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_promoter, args=(spec, w, 1000 + w, queue)) for w in range(2)]
    for p in procs:
        p.start()
    # Watch while they race: at every look there is exactly one production version.
    seen = []
    while any(p.is_alive() for p in procs) and queue.qsize() < len(procs):
        state = stages(store, "m")
        seen.append([v for v, s in state.items() if s == "production"])
    made = dict(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert seen and all(len(prod) == 1 for prod in seen), [s for s in seen if len(s) != 1][:3]

    events = history(store, "m")  # checks seq 1..n and the parent chain
    created = [i for ids in made.values() for i in ids]
    # No lost update and no duplicate: every event a promoter made is in the line, once.
    assert sorted(e["id"] for e in events[1:]) == sorted(created)
    assert len(created) >= ROUNDS  # both made progress (a version already production is a noop)
    assert all(made.values())
    # Each event was computed from its parent's state: replaying the changes gives every
    # recorded stage map, each with exactly one production version.
    state: dict[str, str] = {}
    for e in events:
        for c in e["changes"]:
            assert state.get(str(c["version"]), "none") == c["from"], e
            state[str(c["version"])] = c["to"]
        assert state == e["stages"]
        assert sum(1 for s in state.values() if s == "production") == 1
    assert production(store, "m")["version"] == events[-1]["version"]


@pytest.mark.slow
def test_racing_promoters_local_directory(tmp_path):
    store = LocalStore(tmp_path / "store")
    _register(store, tmp_path, VERSIONS)
    _race({"kind": "local", "root": str(store.root)})


@pytest.mark.slow
def test_racing_promoters_s3(tmp_path, s3_server, s3_bucket):
    spec = {"kind": "s3", "endpoint": s3_server["endpoint"], "bucket": s3_bucket,
            "access_key": s3_server["access_key"], "secret_key": s3_server["secret_key"]}
    _register(_open(spec), tmp_path, VERSIONS)
    _race(spec)
