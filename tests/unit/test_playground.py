"""The playground (charops.serve.playground): its API, over real HTTP to `charops playground`,
the arena's blind bookkeeping and leaderboard, 20 simultaneous voters.

    .venv/bin/python -m pytest tests/unit/test_playground.py -x -q

The browser side (headless Chromium through Playwright) is tests/unit/test_playground_browser.py.
"""

from __future__ import annotations

import json
import threading
import uuid

import httpx
import pytest

from charops.feedback.store import read_events
from charops.serve.playground.arena import leaderboard, names_model


def sse(url: str, body: dict) -> list[dict]:
    with httpx.stream("POST", url, json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def test_page_is_served_with_a_strict_csp(playground):
    r = httpx.get(playground.url + "/")
    assert r.status_code == 200 and "<title>charops playground</title>" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    assert httpx.get(playground.url + "/playground/static/app.js").status_code == 200
    assert httpx.get(playground.url + "/playground/static/../../etc/passwd").status_code == 404
    info = httpx.get(playground.url + "/playground/api/info").json()
    assert [c["name"] for c in info["characters"]][:2] == ["林小满", "Tom"] and info["arena"] is True
    assert info["characters"][0]["greeting"] == "（微笑）你好呀！"


def test_chat_streams_n_candidates_with_the_rendered_prompt(playground):
    frames = sse(playground.url + "/playground/api/chat",
                 {"character": "林小满", "n": 3, "temperature": 1.0, "max_tokens": 6,
                  "messages": [{"role": "assistant", "content": "（微笑）你好呀！"},
                               {"role": "user", "content": "你好"}]})
    start, end = frames[0], frames[-1]
    assert start["type"] == "start" and end == {"type": "end"}
    assert start["rendered"][0]["role"] == "system" and "林小满" in start["rendered"][0]["content"]
    assert start["rendered"][1:] == [{"role": "assistant", "content": "（微笑）你好呀！"},
                                     {"role": "user", "content": "你好"}]
    assert [c["sampling"]["max_tokens"] for c in start["candidates"]] == [6, 6, 6]
    done = {f["candidate"]: f for f in frames if f["type"] == "done"}
    assert sorted(done) == [0, 1, 2]
    for i, f in done.items():  # the deltas add up to each candidate's text
        assert "".join(d["text"] for d in frames if d["type"] == "delta" and d["candidate"] == i) == f["text"]


def test_chat_refuses_bad_requests(playground):
    url = playground.url + "/playground/api/chat"
    r = httpx.post(url, json={"character": "nobody", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and "unknown character" in r.json()["error"]["message"]
    r = httpx.post(url, json={"character": "Tom", "n": 9, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "n"


def test_chat_and_arena_build_the_prompt_like_the_openai_chat_route(playground):
    """A client system message is merged after the trained profile by default (it used to
    replace it), and the OpenAI route's policy, persona and lorebook fields apply here too."""
    url = playground.url + "/playground/api"
    hi = {"role": "user", "content": "Hello there"}
    client_system = {"role": "system", "content": "Write one short line."}

    def start(**body) -> dict:
        frames = sse(url + "/chat", {"character": "Tom", "max_tokens": 2, **body})
        assert frames[-1] == {"type": "end"}
        return frames[0]

    profile = start(messages=[hi])["rendered"][0]["content"]
    assert "Tom" in profile
    merged = start(messages=[client_system, hi])
    assert merged["rendered"] == [{"role": "system", "content": profile + "\n\nWrite one short line."}, hi]
    client = start(messages=[client_system, hi], character_prompt="client")
    assert client["rendered"] == [client_system, hi]
    assert merged["character_prompt"] == "merge" and client["character_prompt"] == "client"
    only = start(messages=[client_system, hi], character_prompt="profile")
    assert only["rendered"] == [{"role": "system", "content": profile}, hi]
    persona = start(messages=[hi], persona={"name": "Ana", "description": "A sailor."})
    assert persona["rendered"] == [{"role": "system", "content": profile + "\n\nAbout the user:\nName: Ana\nA sailor."},
                                   {**hi, "name": "Ana"}]
    r = httpx.post(url + "/chat", json={"character": "Tom", "messages": [hi], "character_prompt": "replace"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "character_prompt"
    # The arena renders the same prompt (what the vote's event records as the model's input).
    r = httpx.post(url + "/arena", json={"character": "Tom", "messages": [client_system, hi],
                                         "persona": {"name": "Ana"}}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["rendered"] == [{"role": "system", "content": profile + "\n\nAbout the user:\nName: Ana"
                                                                  "\n\nWrite one short line."}, {**hi, "name": "Ana"}]


def _event(eid: str, **action) -> dict:
    return {"id": eid, "at": "2026-12-04T10:00:00Z", "model": {"name": "ignored", "version": None, "sha256": None},
            "character": "Tom", "conversation": "c1", "turn": 0,
            "messages": [{"role": "system", "content": "You are Tom."}, {"role": "user", "content": "hi"}],
            "candidates": [{"text": "GG! hi", "position": 0, "sampling": {"temperature": 0.7}}],
            "action": {"kind": "thumbs", "candidate": 0, "up": True, **action}}


def test_feedback_endpoint_stores_once_and_names_bad_fields(playground):
    url = playground.url + "/playground/api/feedback"
    eid = f"fb-{uuid.uuid4().hex}"
    assert httpx.post(url, json=_event(eid)).status_code == 201
    assert httpx.post(url, json=_event(eid)).json()["status"] == "duplicate"
    r = httpx.post(url, json=_event(eid, up=False))
    assert r.status_code == 409
    r = httpx.post(url, json={**_event(f"fb-{uuid.uuid4().hex}"), "turn": -1})
    assert r.status_code == 400 and r.json()["error"]["field"] == "turn"
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = httpx.post(url, json={**_event(f"fb-{uuid.uuid4().hex}"), "pad": "x" * 300_000})
    assert r.status_code == 413
    stored = [e for e in read_events(playground.store, "charops-chat") if e["id"] == eid]
    assert len(stored) == 1 and stored[0]["model"]["name"] == "charops-chat"


def test_arena_is_blind_and_reveals_after_the_vote(playground):
    body = {"character": "Tom", "conversation": "arena-1", "turn": 0, "topic": "interview",
            "messages": [{"role": "user", "content": "Hello there"}]}
    r = httpx.post(playground.url + "/playground/api/arena", json=body, timeout=60)
    assert r.status_code == 200
    match = r.json()
    assert sorted(c["position"] for c in match["candidates"]) == [0, 1]
    assert "model" not in json.dumps(match["candidates"])  # nothing names the models before the vote
    vote = {"match": match["match"], "id": f"vote-{uuid.uuid4().hex}", "at": "2026-12-04T11:00:00Z",
            "winner": "a"}
    r = httpx.post(playground.url + "/playground/api/arena/vote", json=vote)
    assert r.status_code == 201, r.text
    reveal = r.json()["reveal"]
    assert sorted(reveal.values()) == ["main/model", "other/model"]
    stored = [e for e in read_events(playground.store, "charops-chat") if e["id"] == vote["id"]][0]
    by_pos = sorted(stored["candidates"], key=lambda c: c["position"])
    assert [c["model"]["label"] for c in by_pos] == [reveal["a"], reveal["b"]]
    assert stored["topic"] == "interview" and stored["category"] == "games-videos"
    assert httpx.post(playground.url + "/playground/api/arena/vote",
                      json={**vote, "match": "nope"}).status_code == 404


def test_twenty_simultaneous_voters_lose_and_duplicate_nothing(playground):
    """20 voters vote at once (each sends its vote twice, as a retrying client would)."""
    url = playground.url + "/playground/api"
    body = {"character": "Tom", "turn": 0, "messages": [{"role": "user", "content": "Hi"}]}
    matches = [httpx.post(f"{url}/arena", json={**body, "conversation": f"v{i}"}, timeout=120).json()["match"]
               for i in range(20)]
    ids = [f"crowd-{uuid.uuid4().hex}" for _ in range(20)]
    barrier = threading.Barrier(20)
    answers: list[int] = []

    def voter(i: int) -> None:
        vote = {"match": matches[i], "id": ids[i], "winner": "ab"[i % 2]}
        barrier.wait()
        with httpx.Client(timeout=60) as client:
            answers.append(client.post(f"{url}/arena/vote", json=vote).status_code)
            answers.append(client.post(f"{url}/arena/vote", json=vote).status_code)

    threads = [threading.Thread(target=voter, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200] * 20 + [201] * 20
    stored = [e["id"] for e in read_events(playground.store, "charops-chat") if e["id"] in set(ids)]
    assert sorted(stored) == sorted(ids)
    board = httpx.get(f"{url}/leaderboard").json()
    assert board["votes"] >= 20 and len(board["overall"]) == 2


# -- arena rules, hand-checked ----------------------------------------------------------------

def test_names_model():
    models = [{"name": "charops-chat", "version": 2}, {"name": "charops-chat", "version": 3}]
    assert names_model("I am Charops-Chat, nice to meet you", models)
    assert names_model("this is v3 talking", models)
    assert names_model("version 2 here", models)
    assert not names_model("I have 3 cats and v30 of my notes", models)
    assert not names_model("（微笑）你好呀", models)
    assert names_model("I was trained as sft/model", [{"name": "x", "version": None, "label": "sft/model"}])


def _vote(a, b, winner, category="daily-life", topic="chit-chat", anonymous=True):
    return {"action": {"kind": "vote", "winner": winner, "anonymous": anonymous},
            "category": category, "topic": topic,
            "candidates": [{"position": 0, "model": {"name": "m", "version": a}, "text": ""},
                           {"position": 1, "model": {"name": "m", "version": b}, "text": ""}]}


def test_leaderboard_against_production_hand_checked():
    events = ([_vote(2, 1, "a")] * 3 + [_vote(1, 2, "a")] + [_vote(1, 2, "tie")]
              + [_vote(2, 1, "both_bad")] + [_vote(2, 1, "b", anonymous=False)] * 5)
    board = leaderboard(events, production="m v1", resamples=50)
    assert board["votes"] == 6  # the 5 non-anonymous votes are left out
    row = board["against_production"]["m v2"]
    # v2 vs v1: 3 wins, 1 loss (v1 won as A), 2 ties (tie, both bad): win 50, tie 33.3, lose 16.7
    assert (row["wins"], row["ties"], row["losses"]) == (3, 2, 1)
    assert row["win"] == pytest.approx(50.0) and row["lose"] == pytest.approx(100 / 6)
    assert row["advantage"] == pytest.approx(50.0 - 100 / 6)
    assert [r["model"] for r in board["overall"]] == ["m v2", "m v1"]
    assert set(board["by_category"]) == {"daily-life"} and set(board["by_topic"]) == {"chit-chat"}


def test_deploy_local_mounts_the_playground_at_root(served):
    """`charops deploy NAME --local` serves the page at / and files feedback under the registry
    version it serves; the OpenAI routes beside it answer the openai SDK."""
    import openai

    r = httpx.get(served.url + "/")
    assert r.status_code == 200 and "<title>charops playground</title>" in r.text
    info = httpx.get(served.url + "/playground/api/info").json()
    assert info["model"]["name"] == "charops-chat" and info["model"]["version"] == 1
    assert len(info["model"]["sha256"]) == 64 and info["arena"] is False
    client = openai.OpenAI(base_url=served.url + "/openai/v1", api_key="unused", timeout=60, max_retries=0)
    reply = client.chat.completions.create(model="charops-chat:Tom", max_tokens=4,
                                           messages=[{"role": "user", "content": "Hello"}])
    assert reply.choices[0].message.role == "assistant"


def test_openai_sdk_against_the_playground_server(playground):
    import openai

    client = openai.OpenAI(base_url=playground.url + "/openai/v1", api_key="unused", timeout=60, max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert "charops-chat:Tom" in ids
    stream = client.chat.completions.create(model="charops-chat:Tom", max_tokens=4, stream=True,
                                            messages=[{"role": "user", "content": "Hello"}])
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
