"""The LLM judge client against a real HTTP server on 127.0.0.1 (good, malformed and partial JSON,
429s, 500s, hangs), the position-swap mapping, and cache hits on a re-run.

    .venv/bin/python -m pytest tests/unit/test_eval_judge.py -x -q

The server is a real ``http.server`` speaking the OpenAI chat-completions shape; what it answers
depends on a ``CASE:<name>`` marker in the prompt, and it counts the requests it got per case.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from charops.errors import CharopsError
from charops.eval.judges import openai_judge
from charops.eval.llm import Endpoint, JudgeCache, ask_all, usage_of
from charops.eval.rubric import AnswerError, load_rubric

GOOD = '{"verdict": "ok", "n": 3}'


def _parse(text: str) -> int:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerError(str(exc)) from None
    if not isinstance(obj, dict) or "n" not in obj:
        raise AnswerError("no n")
    return obj["n"]


class JudgeServer:
    """Scripted OpenAI-compatible endpoint: CASE:<name> in the prompt picks the behaviour."""

    def __init__(self, answer=None):
        self.hits: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.answer = answer or (lambda prompt: GOOD)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"]
                case = (re.search(r"CASE:(\w+)", prompt) or [None, "good"])[1]
                with outer.lock:
                    outer.hits[case] += 1
                    n = outer.hits[case]
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    outer.respond(self, case, n, prompt, body)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that gave up on a hanging request leaves a broken pipe: expected

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def respond(self, h, case, n, prompt, body):
        def send(status, payload, headers=()):
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)

        def chat(text):
            send(200, {"choices": [{"message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5}})

        assert body["temperature"] == 0
        if case == "good":
            chat(self.answer(prompt))
        elif case == "malformed":
            chat("I would say the reply is fine, maybe a 4.")
        elif case == "partial":
            chat('{"verdict": "ok", "n": ' if n == 1 else GOOD)  # a truncated answer, then a whole one
        elif case == "ratelimited":
            send(429, {"error": "slow down"}, [("Retry-After", "0")]) if n <= 2 else chat(GOOD)
        elif case == "broken":
            send(500, {"error": "internal"})
        elif case == "flaky":
            send(503, {"error": "unavailable"}) if n == 1 else chat(GOOD)
        elif case == "hang":
            if n == 1:
                time.sleep(3)  # past the client's timeout; the client gives up and retries
            chat(GOOD)
        elif case == "badbody":
            send(200, b"<html>proxy error</html>") if n == 1 else chat(GOOD)
        elif case == "unauthorized":
            send(401, {"error": "bad key"})
        elif case == "slow":
            time.sleep(0.2)
            chat(GOOD)
        else:
            raise AssertionError(case)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _endpoint(url, **kw):
    settings = dict(base_url=url, model="judge-test", api_key="k", timeout_s=0.5, max_retries=2,
                    backoff_s=0.01, max_backoff_s=0.05, concurrency=4)
    settings.update(kw)
    return Endpoint(**settings)


def test_faults_are_retried_then_unjudged_never_scored(tmp_path):
    cases = ["good", "malformed", "partial", "ratelimited", "broken", "flaky", "hang", "badbody"]
    items = [(f"key-{c}", f"judge this CASE:{c}", _parse) for c in cases]
    with JudgeServer() as server:
        answers = ask_all(items, _endpoint(server.url), JudgeCache(tmp_path / "cache.jsonl"))
    got = {c: a for c, a in zip(cases, answers, strict=True)}
    for c in ("good", "partial", "ratelimited", "flaky", "hang", "badbody"):
        assert got[c].value == 3 and got[c].error is None, (c, got[c])
    assert got["good"].attempts == 1
    assert got["partial"].attempts == 2 and got["partial"].raw[0] == '{"verdict": "ok", "n": '
    assert got["ratelimited"].attempts == 3
    assert got["hang"].attempts == 2
    # Never parseable / always failing: bounded attempts (1 + max_retries), then unjudged.
    assert got["malformed"].value is None and got["malformed"].error.startswith("unparseable answer")
    assert got["malformed"].attempts == 3 and len(got["malformed"].raw) == 3
    assert got["broken"].value is None and got["broken"].error == "HTTP 500"
    assert server.hits["broken"] == 3
    usage = usage_of(answers)
    assert usage["unjudged"] == 2 and usage["cached"] == 0
    assert usage["prompt_tokens"] == 10 * sum(len(a.raw) for a in answers)


def test_cache_hits_on_rerun_cost_nothing(tmp_path):
    cache = tmp_path / "cache.jsonl"
    items = [("k-good", "CASE:good one", _parse), ("k-good2", "CASE:good two", _parse),
             ("k-bad", "CASE:malformed", _parse)]
    with JudgeServer() as server:
        first = ask_all(items, _endpoint(server.url), JudgeCache(cache))
        assert server.hits == Counter({"good": 2, "malformed": 3})
        second = ask_all(items, _endpoint(server.url), JudgeCache(cache))
        # Only the unjudged item is asked again; the answered ones come from the cache.
        assert server.hits == Counter({"good": 2, "malformed": 6})
    assert [a.value for a in second] == [a.value for a in first]
    assert [a.cached for a in second] == [True, True, False]
    usage = usage_of(second)
    assert usage["cached"] == 2 and usage["cached_prompt_tokens"] == 20
    # A torn last line (a killed run) is ignored, the rest still hits.
    with open(cache, "a", encoding="utf-8") as fh:
        fh.write('{"key": "k-x", "te')
    assert JudgeCache(cache).get("k-good")["text"] == GOOD


def test_unauthorized_stops_the_run_with_one_line():
    with JudgeServer() as server, pytest.raises(CharopsError, match="HTTP 401"):
        ask_all([("k", "CASE:unauthorized", _parse), ("k2", "CASE:good", _parse)], _endpoint(server.url))


def test_concurrency_is_bounded():
    items = [(f"k{i}", f"CASE:slow {i}", _parse) for i in range(8)]
    with JudgeServer() as server:
        ask_all(items, _endpoint(server.url, concurrency=3))
        assert server.max_in_flight <= 3
    with JudgeServer() as server:
        ask_all(items, _endpoint(server.url, concurrency=1))
        assert server.max_in_flight == 1


def test_endpoint_from_env(monkeypatch):
    monkeypatch.setenv("CHAROPS_JUDGE_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("CHAROPS_JUDGE_API_KEY", "secret")
    ep = Endpoint.from_env(model="m")
    assert (ep.base_url, ep.api_key, ep.model) == ("http://127.0.0.1:9/v1", "secret", "m")
    monkeypatch.delenv("CHAROPS_JUDGE_BASE_URL")
    with pytest.raises(CharopsError, match="CHAROPS_JUDGE_BASE_URL"):
        Endpoint.from_env(model="m")


# --- the openai judge: rubric prompts, strict parsing, position swap ------------------------

def _reply(pid, model, reply, character="林秋雁"):
    return {"id": pid, "model": model, "character": character, "category": "celebrity", "topic": "interview",
            "system": "你是林秋雁，退役乒乓球运动员。", "messages": [
                {"role": "system", "content": "你是林秋雁，退役乒乓球运动员。"},
                {"role": "user", "content": "您拿过什么冠军？"}], "reply": reply}


def _judge_answer(prompt: str) -> str:
    if "## Reply A" in prompt:
        a = prompt.split("## Reply A", 1)[1].split("## Reply B", 1)[0]
        if "POSITIONBIAS" in prompt:
            return '{"winner": "A", "reason": "first"}'   # always the first shown: inconsistent
        return json.dumps({"winner": "A" if "GOOD" in a else "B", "reason": "better"})
    keys = re.search(r"with exactly these (?:dimension|metric) keys: (.*)\.", prompt)[1]
    dims = json.loads(f"[{keys}]")
    score = 5 if "GOOD" in prompt.split("## Reply to rate", 1)[1] else 2
    return "```json\n" + json.dumps({"scores": {d: score for d in dims}, "reason": "x"}) + "\n```"


def _cfg(tmp_path, url, **kw):
    base = dict(judge_base_url=url, judge_model="judge-test", judge_timeout_s=2.0, judge_max_retries=1,
                judge_backoff_s=0.01, judge_concurrency=4, judge_rate_limit=0.0, judge_max_tokens=256,
                judge_cache=None, output_dir=str(tmp_path), metric_subsets=None, pointwise=True, progress=False)
    base.update(kw)
    return SimpleNamespace(**base)


def test_openai_judge_pointwise_and_position_swap(tmp_path, monkeypatch):
    monkeypatch.delenv("CHAROPS_JUDGE_API_KEY", raising=False)
    rubric = load_rubric("characterglm-v1")
    cand = [_reply("p1", "candidate", "GOOD（笑）环太平洋公开赛冠军。"), _reply("p2", "candidate", "不知道。"),
            _reply("p3", "candidate", "POSITIONBIAS 嗯。")]
    base = [_reply("p1", "baseline", "我是AI。"), _reply("p2", "baseline", "GOOD 三连冠！"),
            _reply("p3", "baseline", "POSITIONBIAS 哦。")]
    with JudgeServer(answer=_judge_answer) as server:
        out = openai_judge(cand + base, list(zip(cand, base, strict=True)), _cfg(tmp_path, server.url), rubric)
    pw = {r["id"]: r for r in out["pairwise"]}
    assert (pw["p1"]["verdict_ab"], pw["p1"]["verdict_ba"], pw["p1"]["verdict"]) == ("a", "a", "win")
    assert (pw["p2"]["verdict_ab"], pw["p2"]["verdict_ba"], pw["p2"]["verdict"]) == ("b", "b", "lose")
    # The judge picked the first position both times: the orders disagree about the models -> tie.
    assert (pw["p3"]["verdict_ab"], pw["p3"]["verdict_ba"], pw["p3"]["verdict"]) == ("a", "b", "tie")
    assert pw["p1"]["raw_ab"] and pw["p1"]["judge"] == "openai:judge-test"
    pt = {(r["id"], r["model"]): r for r in out["pointwise"]}
    assert pt[("p1", "candidate")]["scores"] == {d: 5 for d in rubric.keys}
    assert pt[("p1", "baseline")]["scores"]["Overall"] == 2
    assert pt[("p1", "candidate")]["rubric"] == "characterglm-v1@1"
    assert out["info"]["usage"]["pairwise"]["items"] == 6


def test_charactereval_subsets_score_each_example_on_its_own_metrics(tmp_path):
    rubric = load_rubric("charactereval-v1")
    assert len(rubric.keys) == 12
    subsets = tmp_path / "id2metric.jsonl"
    subsets.write_text(json.dumps({"6208": [["Accuracy", "知识准确率"]],
                                   "347": [["Behavior", "行为一致性"], ["Empathy", "共情度"]]}), encoding="utf-8")
    replies = [_reply("test_data-6208", "candidate", "GOOD"), _reply("test_data-347", "candidate", "嗯"),
               _reply("other", "candidate", "GOOD")]
    with JudgeServer(answer=_judge_answer) as server:
        out = openai_judge(replies, [], _cfg(tmp_path, server.url, metric_subsets=str(subsets)), rubric)
    scores = {r["id"]: r["scores"] for r in out["pointwise"]}
    assert scores["test_data-6208"] == {"Knowledge Accuracy": 5}
    assert scores["test_data-347"] == {"Persona Behavior": 2, "Empathy": 2}
    assert list(scores["other"]) == rubric.keys   # no entry: all twelve


def test_eval_stage_with_the_openai_judge_and_a_cached_rerun(tmp_path, monkeypatch, micro_model_dir,
                                                             micro_ref_model_dir, eval_dataset_dir):
    from charops.config import load_config
    from charops.eval.run import EvalConfig, run

    monkeypatch.setenv("CHAROPS_JUDGE_API_KEY", "test-key")
    out = tmp_path / "eval"
    with JudgeServer(answer=_judge_answer) as server:
        overrides = [f"model={micro_model_dir}", f"baseline_model={micro_ref_model_dir}",
                     f"dataset={eval_dataset_dir}", f"output_dir={out}", "judge=openai",
                     f"judge_base_url={server.url}", "judge_model=judge-test", "max_new_tokens=4",
                     "progress=false", "bootstrap_resamples=100", "heldout=false", "judge_backoff_s=0.01"]
        summary = run(load_config(EvalConfig, "default", overrides))
        first = sum(server.hits.values())
        # 4 prompts x 2 models point-wise + 4 pairs x 2 orders
        assert first == 8 + 8
        again = run(load_config(EvalConfig, "default", overrides + ["reuse_replies=true"]))
        assert sum(server.hits.values()) == first  # everything from the cache
    assert summary["judge"]["kind"] == "openai" and summary["judge"]["rubric"] == "characterglm-v1"
    assert summary["judge"]["rubric_version"] == 1
    assert summary["pointwise"]["dimensions"] == load_rubric("characterglm-v1").keys
    assert summary["pairwise"]["overall"]["n"] == 4
    assert again["pairwise"]["overall"] == summary["pairwise"]["overall"]
    assert again["judge"]["usage"]["pairwise"]["cached"] == 8
    assert again["judge"]["usage"]["pairwise"]["prompt_tokens"] == 0
    assert any("reused the replies" in s for s in again["skipped"])


def test_eval_stage_with_a_third_model_adds_bradley_terry(tmp_path, micro_model_dir, micro_ref_model_dir,
                                                          eval_dataset_dir):
    from charops.config import load_config
    from charops.eval.run import EvalConfig, run

    with JudgeServer(answer=_judge_answer) as server:
        summary = run(load_config(EvalConfig, "default", [
            f"model={micro_model_dir}", f"baseline_model={micro_ref_model_dir}",
            f"others=[production={micro_ref_model_dir}]", f"dataset={eval_dataset_dir}",
            f"output_dir={tmp_path / 'eval'}", "judge=openai", f"judge_base_url={server.url}",
            "judge_model=judge-test", "max_new_tokens=3", "progress=false", "bootstrap_resamples=50",
            "heldout=false", "pointwise=false"]))
    assert set(summary["bradley_terry"]["models"]) == {"candidate", "baseline", "production"}
    assert summary["pairwise"]["b"] == "baseline" and summary["pairwise"]["overall"]["n"] == 4
    assert summary["pairwise_others"]["production"]["overall"]["n"] == 4
    assert summary["others"] == [{"label": "production", "model": str(micro_ref_model_dir)}]
    assert set(summary["automatic"]["others"]) == {"production"}
    with pytest.raises(CharopsError, match="labels must differ"):
        load_config(EvalConfig, "default", ["others=[baseline=runs/x]"])


def test_rate_limit_spaces_request_starts(monkeypatch):
    import asyncio

    from charops.eval import llm

    waits: list[float] = []

    async def record(seconds):  # the pacer's schedule, without waiting it out
        waits.append(seconds)

    async def five_starts():
        pacer = llm._Pacer(rate=0.5)  # one start every 2 s
        monkeypatch.setattr(llm.asyncio, "sleep", record)
        await asyncio.gather(*(pacer.wait() for _ in range(5)))

    asyncio.run(five_starts())
    assert sorted(waits) == pytest.approx([0, 2, 4, 6, 8], abs=0.5)
    waits.clear()
    asyncio.run(llm._Pacer(rate=0).wait())
    assert waits == []
