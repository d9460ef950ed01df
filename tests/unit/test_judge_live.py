"""charops's LLM judge (``judge=openai``) end to end against charops's own server: ``charops
deploy --model`` (a subprocess on a free loopback port) serving the micro model, with
``response_format=json_schema`` so even a model with random weights answers in the rubric's
shape. Verdicts parse in both orders, the cache answers a re-run, and a queue of one (HTTP 429
with Retry-After) makes the client retry. Against an endpoint without structured output (a
stand-in: charops's server has it) the judge asks again without ``response_format``.

    .venv/bin/python -m pytest tests/unit/test_judge_live.py -x -q
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from charops.eval.judges import openai_judge
from charops.eval.llm import Endpoint, JudgeCache, ask_all
from charops.eval.rubric import PAIRWISE_SCHEMA, load_rubric, parse_pairwise


def _reply(pid, model, reply):
    return {"id": pid, "model": model, "character": "Tom", "category": "games-videos", "topic": "interview",
            "system": "You are Tom, a cheerful gamer.",
            "messages": [{"role": "system", "content": "You are Tom, a cheerful gamer."},
                         {"role": "user", "content": "What is your best game?"}], "reply": reply}


def _cfg(tmp_path, url, **kw):
    base = dict(judge_base_url=url, judge_model="charops-judge", judge_timeout_s=60.0, judge_max_retries=12,
                judge_backoff_s=0.2, judge_concurrency=4, judge_rate_limit=0.0, judge_max_tokens=160,
                judge_cache=str(tmp_path / "judge_cache.jsonl"), output_dir=str(tmp_path), metric_subsets=None,
                pointwise=True, progress=False)
    return SimpleNamespace(**{**base, **kw})


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory, serve_model_dir):
    """The micro model behind `charops deploy`, with a queue of one: concurrent judge requests
    beyond it are answered 429 (Retry-After: 1) and retried by the judge's client."""
    import shutil

    from conftest import ServerProcess

    base = tmp_path_factory.mktemp("judge_live")
    # The rubric prompts are longer than the micro model's 512 positions (its tokenizer splits
    # English into characters); its rotary positions extend, and random weights care not.
    model = base / "model"
    shutil.copytree(serve_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 16384}))
    server = ServerProcess(["charops-judge", "--model", str(model), "--max-tokens-cap", "256",
                            "--max-queue", "1", "--max-batch-size", "1"], base / "server.log")
    server.wait_ready()
    yield server
    server.stop()


def test_judge_against_charops_deploy(tmp_path, judge_server, monkeypatch):
    monkeypatch.delenv("CHAROPS_JUDGE_API_KEY", raising=False)
    rubric = load_rubric("characterglm-v1")
    cand = [_reply("p1", "candidate", "Chess, every night."), _reply("p2", "candidate", "I like tea.")]
    base = [_reply("p1", "baseline", "As an AI, I do not play."), _reply("p2", "baseline", "Board games!")]
    url = f"{judge_server.url}/openai/v1"
    cfg = _cfg(tmp_path, url)
    out = openai_judge(cand + base, list(zip(cand, base, strict=True)), cfg, rubric)

    # Every verdict parsed, in both orders, and the swap rule combined them.
    for row in out["pairwise"]:
        assert row["error"] is None, row
        assert row["verdict_ab"] in ("a", "b", "tie") and row["verdict_ba"] in ("a", "b", "tie")
        assert row["verdict"] in ("win", "lose", "tie")
        for raw in (row["raw_ab"][-1], row["raw_ba"][-1]):
            assert json.loads(raw)["winner"] in ("A", "B", "tie")
    for row in out["pointwise"]:
        assert row["error"] is None, row
        assert set(row["scores"]) == set(rubric.keys)
        lo, hi = rubric.scale
        assert all(lo <= v <= hi for v in row["scores"].values())
    usage = out["info"]["usage"]
    assert usage["pairwise"]["items"] == 4 and usage["pointwise"]["items"] == 4
    # A queue of one in front of 4 concurrent requests: some were refused (429) and retried.
    assert usage["pairwise"]["requests"] + usage["pointwise"]["requests"] > 8
    assert usage["pairwise"]["unjudged"] == 0 and usage["pointwise"]["unjudged"] == 0

    # A re-run is answered from the cache: no request reaches the server.
    again = openai_judge(cand + base, list(zip(cand, base, strict=True)), cfg, rubric)
    assert again["info"]["usage"]["pairwise"]["cached"] == 4 and again["info"]["usage"]["pairwise"]["requests"] == 0
    assert [r["verdict"] for r in again["pairwise"]] == [r["verdict"] for r in out["pairwise"]]
    assert [r["scores"] for r in again["pointwise"]] == [r["scores"] for r in out["pointwise"]]


def test_without_response_format_the_model_answers_no_json(tmp_path, judge_server):
    """The same question without the schema (response_format="off"): the micro model writes no
    parseable verdict, so the schema is what makes the judge work against it."""
    url = f"{judge_server.url}/openai/v1"
    prompt = 'Which reply is better? Answer {"winner": "A" | "B" | "tie"}.'
    on = Endpoint(base_url=url, model="charops-judge", max_tokens=64, max_retries=12, backoff_s=0.2,
                  concurrency=1)
    off = Endpoint(**{**on.__dict__, "response_format": "off", "max_retries": 0})
    got = ask_all([("k", prompt, parse_pairwise, PAIRWISE_SCHEMA)], on, JudgeCache(None))[0]
    assert got.error is None and got.value in ("A", "B", "tie")
    free = ask_all([("k", prompt, parse_pairwise, PAIRWISE_SCHEMA)], off, JudgeCache(None))[0]
    assert free.value is None and free.error.startswith("unparseable answer")


def test_server_refuses_a_bad_schema_with_400(judge_server):
    r = httpx.post(f"{judge_server.url}/openai/v1/chat/completions", timeout=30, json={
        "model": "charops-judge", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"


def test_an_endpoint_without_response_format_is_asked_without_it():
    """A stand-in for an OpenAI-compatible server that refuses ``response_format`` (charops's own
    accepts it, so only a stand-in shows this path)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[bool] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append("response_format" in body)
            if "response_format" in body:
                status, payload = 400, {"error": {"message": "Unrecognized request argument supplied: response_format"}}
            else:
                status, payload = 200, {"choices": [{"message": {"role": "assistant", "content": '{"winner": "B"}'}}]}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        ep = Endpoint(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", model="m", concurrency=1,
                      max_retries=2, backoff_s=0.01)
        items = [(f"k{i}", "which?", parse_pairwise, PAIRWISE_SCHEMA) for i in range(3)]
        answers = ask_all(items, ep, JudgeCache(None))
    finally:
        httpd.shutdown()
    assert [a.value for a in answers] == ["B", "B", "B"]
    # The first item learnt that the endpoint refuses it; the others never sent it.
    assert seen == [True, False, False, False] and answers[0].attempts == 2


def test_the_served_process_reports_the_profile_policy(judge_server):
    """`charops serve` (the subprocess, through KServe's app and the guard) keeps the header."""
    body = {"model": "charops-judge:Tom", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "system", "content": "Reply briefly."}, {"role": "user", "content": "hi"}]}
    r = httpx.post(f"{judge_server.url}/openai/v1/chat/completions", timeout=60, json=body)
    assert r.status_code == 200 and r.headers["x-charops-character-prompt"] == "merge"
    r = httpx.post(f"{judge_server.url}/openai/v1/chat/completions", timeout=60,
                   json={**body, "character_prompt": "client"})
    assert r.headers["x-charops-character-prompt"] == "client"
