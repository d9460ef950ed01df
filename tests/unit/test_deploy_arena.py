"""`charops deploy NAME --local` puts production and staging in the playground's arena (issue 17):
with a staging version other than the one served the arena is on at / (two blind replies, the
vote stored as a feedback event); with production only, or --arena none, it is off.

    .venv/bin/python -m pytest tests/unit/test_deploy_arena.py -x -q
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from conftest import two_version_registry

from charops.feedback.store import read_events
from charops.registry.stages import transition


@pytest.fixture
def registry(tmp_path, serve_model_dir):
    """A local store with charops-chat v1 (production) and v2 (other generation settings)."""
    store = two_version_registry(tmp_path, serve_model_dir)
    transition(store, "charops-chat", 1, "production", actor="test", reason="first")
    return store


def _deploy(start_server, store, tmp_path, *extra):
    return start_server("charops-chat", "--local", "--store", str(store.root), "--max-tokens-cap", "16",
                        *extra, env={"CHAROPS_CACHE": str(tmp_path / "cache")})


def test_deploy_local_arena_is_production_vs_staging(registry, start_server, tmp_path):
    transition(registry, "charops-chat", 2, "staging", actor="test", reason="candidate")
    server = _deploy(start_server, registry, tmp_path)
    assert "arena: charops-chat v1 vs charops-chat v2" in server.log()  # the ready line says who plays
    api = server.url + "/playground/api"
    info = httpx.get(api + "/info").json()
    assert info["arena"] is True and info["arena_models"] == ["charops-chat v1", "charops-chat v2"]
    assert info["model"]["version"] == 1
    body = {"character": "Tom", "conversation": "arena-deploy", "turn": 0, "topic": "interview",
            "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 8}
    r = httpx.post(api + "/arena", json=body, timeout=120)
    assert r.status_code == 200, r.text
    match = r.json()
    assert sorted(c["position"] for c in match["candidates"]) == [0, 1]
    assert "model" not in json.dumps(match["candidates"])  # blind until the vote
    vote = {"match": match["match"], "id": f"vote-{uuid.uuid4().hex}", "at": "2026-12-04T11:00:00Z",
            "winner": "b"}
    r = httpx.post(api + "/arena/vote", json=vote, timeout=30)
    assert r.status_code == 201, r.text
    assert sorted(r.json()["reveal"].values()) == ["charops-chat v1", "charops-chat v2"]
    (stored,) = [e for e in read_events(registry, "charops-chat") if e["id"] == vote["id"]]
    assert stored["action"]["winner"] == "b"
    assert sorted(c["model"]["version"] for c in stored["candidates"]) == [1, 2]


def test_deploy_local_without_staging_or_with_arena_none_has_no_arena(registry, start_server, tmp_path):
    server = _deploy(start_server, registry, tmp_path)  # production only
    assert httpx.get(server.url + "/playground/api/info").json()["arena"] is False
    r = httpx.post(server.url + "/playground/api/arena", json={"character": "Tom", "messages": []})
    assert r.status_code == 404 and "the arena needs two models" in r.text
    server.stop()
    transition(registry, "charops-chat", 2, "staging", actor="test", reason="candidate")
    off = _deploy(start_server, registry, tmp_path, "--arena", "none")
    info = httpx.get(off.url + "/playground/api/info").json()
    assert info["arena"] is False and info["arena_models"] is None
