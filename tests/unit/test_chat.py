"""`charops chat` in a pseudo-terminal (pexpect): typing lines and reading the screen, against
the local server (`charops deploy` in a subprocess). Replies are seeded samples, so the screen
must show exactly what the openai SDK gets for the same conversation.

    .venv/bin/python -m pytest tests/unit/test_chat.py -x -q
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import openai
import pexpect
import pytest
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from charops.cli.chat import _CONTROL, base_url
from charops.cli.main import app

pytestmark = pytest.mark.slow

MAX = 6
# Seeded sampling: a random micro model decodes greedily into the same newlines whatever the
# context, while a seeded sample depends on the conversation and is still reproducible.
SAMPLING = ["--max-tokens", str(MAX), "--temperature", "1", "--seed", "7"]


@pytest.fixture(scope="module")
def sdk(served):
    client = openai.OpenAI(base_url=served.url + "/openai/v1", api_key="unused", max_retries=0, timeout=60)

    def answer(model: str, turns: list[str]) -> list[str]:
        """Greedy replies, turn by turn, with the history kept (as the chat must do)."""
        history, replies = [], []
        for t in turns:
            history.append({"role": "user", "content": t})
            r = client.chat.completions.create(model=model, messages=history, temperature=1, seed=7, max_tokens=MAX)
            replies.append(r.choices[0].message.content)
            history.append({"role": "assistant", "content": replies[-1]})
        return replies

    return answer


def _spawn(*args: str) -> pexpect.spawn:
    charops = str(Path(sys.executable).parent / "charops")
    return pexpect.spawn(charops, ["chat", *args], encoding="utf-8", timeout=60,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, dimensions=(40, 200))


def _screen(text: str) -> str:
    """A reply as the terminal shows it: controls removed, newlines as the pty writes them."""
    return text.translate(_CONTROL).replace("\n", "\r\n")


def _turn(child: pexpect.spawn, line: str, speaker: str) -> str:
    child.sendline(line)
    child.expect_exact(f"{speaker}> ")
    child.expect_exact("\r\nyou> ")
    return child.before


def test_chat_streams_keeps_history_resets_and_switches(served, sdk):
    child = _spawn("--endpoint", served.url, "--character", "林小满", *SAMPLING)
    try:
        child.expect_exact("talking to 林小满 (charops-chat:林小满)")
        child.expect_exact("you> ")
        first, second = sdk("charops-chat:林小满", ["你好", "你在做什么？"])
        assert _turn(child, "你好", "林小满") == _screen(first)
        # The second reply is the one for the whole conversation (what is sent each turn is
        # checked against the recording endpoint below: this model barely looks at context).
        alone = sdk("charops-chat:林小满", ["你在做什么？"])[0]
        assert _turn(child, "你在做什么？", "林小满") == _screen(second)
        child.sendline("/reset")
        child.expect_exact("(conversation cleared)")
        child.expect_exact("you> ")
        assert _turn(child, "你在做什么？", "林小满") == _screen(alone)
        child.sendline("/character Tom")
        child.expect_exact("(now talking to Tom; conversation cleared)")
        child.expect_exact("you> ")
        assert _turn(child, "hello", "Tom") == _screen(sdk("charops-chat:Tom", ["hello"])[0])
        child.sendline("/character 无名")
        child.expect_exact("error: unknown character '无名'; this server plays: Tom, 林小满")
        child.expect_exact("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_with_profiles_against_a_server_that_does_not_know_the_character(served, sdk, serve_model_dir):
    """A plain OpenAI endpoint: the profile from --profiles is sent as the system prompt."""
    from charops.serve.characters import load_characters

    child = _spawn("--endpoint", served.url + "/openai/v1", "--model", "charops-chat", "--character", "Tom",
                   "--profiles", str(serve_model_dir), *SAMPLING)
    try:
        child.expect_exact("you> ")
        shown = _turn(child, "hello", "Tom")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    system = load_characters(serve_model_dir)["Tom"].system_prompt
    client = openai.OpenAI(base_url=served.url + "/openai/v1", api_key="x", max_retries=0, timeout=60)
    expected = client.chat.completions.create(
        model="charops-chat", temperature=1, seed=7, max_tokens=MAX,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "hello"}])
    assert shown == _screen(expected.choices[0].message.content)


def test_chat_errors_are_one_line():
    runner = CliRunner()
    r = runner.invoke(app, ["chat", "--endpoint", "ftp://x"])
    assert r.exit_code == 2 and "expected http(s)://" in r.output
    r = runner.invoke(app, ["chat", "--endpoint", "http://127.0.0.1:9"])  # nothing listens on port 9
    assert r.exit_code == 2 and "cannot reach http://127.0.0.1:9/openai/v1" in r.output


def test_base_url():
    assert base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/openai/v1"
    assert base_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/openai/v1"
    assert base_url("https://llm.example.com/v1/") == "https://llm.example.com/v1"


class StandIn:
    """A stand-in app served on a free loopback port in a thread; ``url`` is its OpenAI base URL."""

    def _serve(self, api: FastAPI) -> None:
        import threading

        import uvicorn
        from conftest import _free_ports

        self.port = _free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Recorder(StandIn):
    """A STAND-IN OpenAI-compatible endpoint (not the charops server) on 127.0.0.1 that records
    what it is sent and streams a numbered reply: it shows what the chat sends each turn."""

    def __init__(self):
        from fastapi.responses import StreamingResponse

        self.requests: list[dict] = []
        api = FastAPI()

        @api.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "other-model", "object": "model", "created": 0, "owned_by": "x"}]}

        @api.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            n = len(self.requests)

            def frames():
                for piece in ("reply ", f"{n}"):
                    yield "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                                                 "model": body["model"], "choices": [{"index": 0,
                                                 "delta": {"content": piece}, "finish_reason": None}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(frames(), media_type="text/event-stream")

        self._serve(api)


def test_chat_sends_the_history_the_profile_and_forgets_on_reset(serve_model_dir):
    from charops.serve.characters import load_characters

    rec = Recorder()
    try:
        child = _spawn("--endpoint", rec.url, "--character", "林小满", "--profiles", str(serve_model_dir))
        child.expect_exact("talking to 林小满 (other-model)")
        child.expect_exact("you> ")
        assert _turn(child, "你好", "林小满") == "reply 1"
        assert _turn(child, "然后呢？", "林小满") == "reply 2"
        child.sendline("/reset")
        child.expect_exact("you> ")
        assert _turn(child, "再见", "林小满") == "reply 3"
        child.sendline("/character Tom")
        child.expect_exact("you> ")
        assert _turn(child, "hi", "Tom") == "reply 4"
        child.sendline("/exit")
        child.expect(pexpect.EOF)
        child.close()
    finally:
        rec.close()
    chars = load_characters(serve_model_dir)
    xm = {"role": "system", "content": chars["林小满"].system_prompt}
    assert [r["messages"] for r in rec.requests] == [
        [xm, {"role": "user", "content": "你好"}],
        [xm, {"role": "user", "content": "你好"}, {"role": "assistant", "content": "reply 1"},
         {"role": "user", "content": "然后呢？"}],
        [xm, {"role": "user", "content": "再见"}],
        [{"role": "system", "content": chars["Tom"].system_prompt}, {"role": "user", "content": "hi"}],
    ]
    assert all(r["model"] == "other-model" and r["stream"] is True for r in rec.requests)
    assert child.exitstatus == 0


EVIL = "\x1b]0;pwned\x07\x1b[2J"  # sets the terminal title and clears the screen if printed raw


class Misbehaving(StandIn):
    """A STAND-IN endpoint on 127.0.0.1 that answers ``/models`` and each chat turn the way the
    test says (``models``: a list of ids, "html" or "not-a-list"; ``turns``: one answer per
    turn), to show that `charops chat` turns each into one line and keeps the conversation."""

    def __init__(self, models, turns: list[str]):
        from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

        self.turns, self.requests = list(turns), []
        api = FastAPI()

        @api.get("/v1/models")
        async def list_models():
            if models == "html":
                return HTMLResponse("<html><body>Welcome to nginx!</body></html>")
            if models == "not-a-list":
                return JSONResponse({"object": "list", "data": {"id": "m"}})
            return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "x"}
                                               for i in models]}

        @api.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            how = self.turns.pop(0)
            if how == "status":
                return JSONResponse({"error": {"message": f"bad request {EVIL}", "type": "invalid_request_error"}},
                                    status_code=400)  # (a 5xx would be retried by the SDK)

            def chunk(choices) -> str:
                return "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                                              "model": body["model"], "choices": choices}) + "\n\n"

            def frames():
                yield chunk([{"index": 0, "delta": {"content": "partial "}, "finish_reason": None}])
                if how == "ok":
                    yield chunk([{"index": 0, "delta": {"content": f"reply {len(self.requests)}"},
                                  "finish_reason": "stop"}])
                elif how == "bad-json":
                    yield "data: {not json\n\n"
                elif how == "bad-choices":
                    yield chunk("oops")
                elif how == "bad-content":
                    yield chunk([{"index": 0, "delta": {"content": 42}}])
                elif how == "error-frame":  # what charops' own server sends when a stream fails
                    yield "data: " + json.dumps({"error": {"message": f"generation failed {EVIL}",
                                                           "type": "server_error"}}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(frames(), media_type="text/event-stream")

        self._serve(api)


@pytest.mark.parametrize("models,message", [
    ("html", "/v1/models answered text/html, not an OpenAI model list"),
    ("not-a-list", "'data' is not a list of models"),
])
def test_a_models_answer_of_the_wrong_kind_is_one_line(models, message):
    end = Misbehaving(models, [])
    try:
        r = CliRunner().invoke(app, ["chat", "--endpoint", end.url], input="/exit\n")
    finally:
        end.close()
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_server_text_is_printed_with_its_controls_escaped_and_bad_turns_do_not_end_the_chat():
    """Issue 19: model ids and error messages came out raw (escape sequences reached the
    terminal); a malformed stream, a wrong `choices` shape and an SSE error frame were tracebacks."""
    end = Misbehaving([f"m{EVIL}"], ["ok", "bad-json", "bad-choices", "bad-content", "error-frame", "status", "ok"])
    try:
        r = CliRunner().invoke(app, ["chat", "--endpoint", end.url],
                               input="one\ntwo\nthree\nfour\nfive\nsix\nseven\n/exit\n")
    finally:
        end.close()
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert "talking to m\\x1b]0;pwned\\x07\\x1b[2J" in r.output  # the id, visibly escaped
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 5, r.output
    assert "not an OpenAI chat stream (JSONDecodeError" in errors[0]
    assert "'choices' is str, not a list" in errors[1]
    assert "'choices[0].delta.content' is int, not text" in errors[2]
    assert errors[3].startswith("error: the server ended the reply: generation failed \\x1b]0;pwned")
    assert errors[4].startswith("error: 400: bad request \\x1b]0;pwned")
    # The conversation survived: the last turn carries the first exchange and none of the failed ones.
    assert [m["content"] for m in end.requests[-1]["messages"]] == ["one", "partial reply 1", "seven"]


def test_a_seed_out_of_range_is_refused_before_connecting():
    for seed in (str(2**64), str(-2**63 - 1)):
        r = CliRunner().invoke(app, ["chat", "--endpoint", "http://127.0.0.1:9", "--seed", seed])
        assert r.exit_code == 2 and "--seed" in r.output and "out of range" in r.output, r.output
