"""The local server as a user meets it: `charops deploy ... --local` in a subprocess on a free
loopback port, the official `openai` SDK as client (streaming and not), raw HTTP for the bad
requests, the KServe routes, 429 on a full queue, the API key, SIGTERM.

    .venv/bin/python -m pytest tests/unit/test_serve.py -x -q
"""

from __future__ import annotations

import json
import signal
import threading

import httpx
import openai
import psutil
import pytest
import torch
from conftest import SERVE_CHARACTERS

from charops.data.render import render_system_prompt
from charops.data.schema import CharacterProfile
from charops.serve.server import load_model

pytestmark = pytest.mark.slow

XIAOMAN = CharacterProfile.model_validate(SERVE_CHARACTERS[0])


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/openai/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(serve_model_dir):
    """Greedy replies computed in this process: what the server must answer."""
    model, tok = load_model(serve_model_dir)

    def reply(messages: list[dict], n: int, logits_processor=None) -> tuple[str, int]:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], device=model.device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False, repetition_penalty=1.1,
                                 pad_token_id=tok.pad_token_id, eos_token_id=model.generation_config.eos_token_id,
                                 logits_processor=logits_processor(ids.shape[1]) if logits_processor else None)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), ids.shape[1]

    return reply


GREEDY = {"temperature": 0, "max_tokens": 8, "extra_body": {"min_tokens": 8}}
HELLO = [{"role": "user", "content": "你好，你在做什么？"}]


def test_models_lists_every_character(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["charops-chat", "charops-chat:林小满", "charops-chat:Tom"]
    assert client.models.retrieve("charops-chat:Tom").id == "charops-chat:Tom"


def test_presence_and_frequency_penalties_reach_the_engine(client, reference):
    from test_serve_engine import _OpenAIPenalties  # OpenAI's formula written out by hand
    from transformers import LogitsProcessorList

    resp = client.chat.completions.create(model="charops-chat", messages=HELLO, temperature=0, max_tokens=12,
                                          presence_penalty=0.8, frequency_penalty=1.5, extra_body={"min_tokens": 12})
    expected, _ = reference(HELLO, 12, lambda n: LogitsProcessorList([_OpenAIPenalties(n, 0.8, 1.5)]))
    assert resp.choices[0].message.content == expected


def test_character_profile_is_the_system_prompt(client, reference):
    resp = client.chat.completions.create(model="charops-chat:林小满", messages=HELLO, **GREEDY)
    expected, prompt_tokens = reference([{"role": "system", "content": render_system_prompt(XIAOMAN)}, *HELLO], 8)
    assert resp.choices[0].message.content == expected
    assert resp.choices[0].finish_reason == "length"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt_tokens, 8)
    # The extra `character` field names the same character.
    other = client.chat.completions.create(model="charops-chat", messages=HELLO, temperature=0, max_tokens=8,
                                           extra_body={"min_tokens": 8, "character": "林小满"})
    assert other.choices[0].message.content == expected


def test_request_system_prompt_wins_over_the_profile(client, reference):
    """With character_prompt=client (the default merges: tests/unit/test_serve_features.py)."""
    messages = [{"role": "system", "content": "You are a pirate."}, *HELLO]
    resp = client.chat.completions.create(model="charops-chat:林小满", messages=messages,
                                          **{**GREEDY, "extra_body": {"min_tokens": 8, "character_prompt": "client"}})
    expected, prompt_tokens = reference(messages, 8)
    assert resp.choices[0].message.content == expected and resp.usage.prompt_tokens == prompt_tokens


def test_streaming_chat_adds_up_to_the_reply(client, reference):
    stream = client.chat.completions.create(model="charops-chat:Tom", messages=HELLO, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    profile = CharacterProfile.model_validate(SERVE_CHARACTERS[1])
    expected, _ = reference([{"role": "system", "content": render_system_prompt(profile)}, *HELLO], 8)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8


def test_completions_plain_and_streaming(client, served, serve_model_dir):
    model, tok = load_model(serve_model_dir)
    ids = torch.tensor([tok("Hello there", add_special_tokens=False)["input_ids"]], device=model.device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6,
                         do_sample=False, repetition_penalty=1.1, pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    args = {"model": "charops-chat", "prompt": "Hello there", "temperature": 0, "max_tokens": 6,
            "extra_body": {"min_tokens": 6}}
    assert client.completions.create(**args).choices[0].text == expected
    assert "".join(c.choices[0].text for c in client.completions.create(stream=True, **args) if c.choices) == expected
    # Raw SSE: frames are `data: {...}` and the stream ends with `data: [DONE]`.
    raw = httpx.post(served.url + "/openai/v1/completions", json={**args.pop("extra_body"), **args, "stream": True},
                     timeout=30)
    frames = [f for f in raw.text.split("\n\n") if f]
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert all(f.startswith("data: ") for f in frames) and frames[-1] == "data: [DONE]"


def test_concurrent_requests_are_batched_and_each_gets_its_own_reply(client, served, reference):
    questions = [f"第{i}个问题：你喜欢什么？" for i in range(6)]
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        r = client.chat.completions.create(model="charops-chat", messages=[{"role": "user", "content": questions[i]}],
                                           **GREEDY)
        answers[i] = r.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, q in enumerate(questions):
        assert answers[i] == reference([{"role": "user", "content": q}], 8)[0]
    metrics = httpx.get(served.url + "/metrics", timeout=10).text
    sizes = {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
             for line in metrics.splitlines() if line.startswith("charops_serve_batch_size_bucket")}
    count = float(next(ln for ln in metrics.splitlines() if ln.startswith("charops_serve_batch_size_count")).split()[-1])
    assert sizes["1.0"] < count  # at least one generate call served more than one request


BAD = [
    ("not json", b"{bad", 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("no messages", {"model": "charops-chat"}, 400, "messages"),
    ("empty messages", {"model": "charops-chat", "messages": []}, 400, "messages"),
    ("bad role", {"model": "charops-chat", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ("no model", {"messages": HELLO}, 400, "model"),
    ("unknown model", {"model": "gpt-9", "messages": HELLO}, 404, "model"),
    ("unknown character", {"model": "charops-chat:无名", "messages": HELLO}, 404, "model"),
    ("unknown character field", {"model": "charops-chat", "character": "无名", "messages": HELLO}, 404, "character"),
    ("max_tokens over the cap", {"model": "charops-chat", "messages": HELLO, "max_tokens": 65}, 400, "max_tokens"),
    ("max_tokens zero", {"model": "charops-chat", "messages": HELLO, "max_tokens": 0}, 400, "max_tokens"),
    ("temperature", {"model": "charops-chat", "messages": HELLO, "temperature": 3}, 400, "temperature"),
    ("presence_penalty", {"model": "charops-chat", "messages": HELLO, "presence_penalty": 2.5}, 400, "presence_penalty"),
    ("frequency_penalty", {"model": "charops-chat", "messages": HELLO, "frequency_penalty": -3}, 400,
     "frequency_penalty"),
    ("n", {"model": "charops-chat", "messages": HELLO, "n": 0}, 400, "n"),
    ("context", {"model": "charops-chat", "messages": [{"role": "user", "content": "长" * 600}]}, 400, "messages"),
    # Issue 19: each of these stopped the worker thread or was a 500 (or silently greedy).
    ("seed over 2**64", {"model": "charops-chat", "messages": HELLO, "seed": 2**64}, 400, "seed"),
    ("seed under -2**63", {"model": "charops-chat", "messages": HELLO, "seed": -2**63 - 1}, 400, "seed"),
    ("temperature NaN", b'{"model": "charops-chat", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
     400, "temperature"),
    ("top_p NaN", b'{"model": "charops-chat", "messages": [{"role": "user", "content": "x"}], "top_p": NaN}',
     400, "top_p"),
    ("repetition_penalty NaN", b'{"model": "charops-chat", "messages": [{"role": "user", "content": "x"}], '
     b'"repetition_penalty": NaN}', 400, "repetition_penalty"),
    ("temperature Infinity", b'{"model": "charops-chat", "messages": [{"role": "user", "content": "x"}], '
     b'"temperature": Infinity}', 400, "temperature"),
    ("temperature 1e-300", {"model": "charops-chat", "messages": HELLO, "temperature": 1e-300}, 400, "temperature"),
    ("repetition_penalty 1e-300", {"model": "charops-chat", "messages": HELLO, "repetition_penalty": 1e-300},
     400, "repetition_penalty"),
    ("lone surrogate in a message", b'{"model": "charops-chat", "messages": [{"role": "user", "content": "a\\ud800"}]}',
     400, "messages[0].content"),
    ("lone surrogate in model", b'{"model": "charops-chat:\\udc00", "messages": [{"role": "user", "content": "x"}]}',
     400, "model"),
    ("nested too deeply", b"[" * 100_000, 400, None),
]


@pytest.mark.parametrize("what,body,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_openai_errors(served, what, body, status, param):
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(served.url + "/openai/v1/chat/completions", timeout=30, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"] == "invalid_request_error"


def test_completions_refuse_a_lone_surrogate_and_the_v2_route_a_seed_out_of_range(served, client):
    r = httpx.post(served.url + "/openai/v1/completions", timeout=30,
                   content=b'{"model": "charops-chat", "prompt": "\\udfffHello"}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
    for seed in (2**64, -2**63 - 1):
        r = httpx.post(served.url + "/v2/models/charops-chat/infer", timeout=30, json={
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["你好"]}],
            "parameters": {"seed": seed, "max_tokens": 2}})
        assert r.status_code == 400, r.text
    # The worker lives on: a seeded request is answered.
    assert client.chat.completions.create(model="charops-chat", messages=HELLO, max_tokens=2, seed=2**64 - 1).choices


def test_oversized_bodies_are_refused_and_the_server_lives_on(served, client):
    big = json.dumps({"model": "charops-chat", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}).encode()
    r = httpx.post(served.url + "/openai/v1/chat/completions", content=big, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: counted while read
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
    r = httpx.post(served.url + "/openai/v1/chat/completions", content=chunked(), timeout=30)
    assert r.status_code == 413
    assert client.chat.completions.create(model="charops-chat", messages=HELLO, max_tokens=2).choices


def test_kserve_routes(served):
    u = served.url
    assert httpx.get(u + "/v2/health/ready", timeout=10).json()["ready"] is True
    assert httpx.get(u + "/v1/models/charops-chat", timeout=10).json()["ready"] is True
    v1 = httpx.post(u + "/v1/models/charops-chat:predict", timeout=30, json={"instances": [
        "你好", {"messages": HELLO, "character": "Tom", "max_tokens": 3}]}).json()
    assert len(v1["predictions"]) == 2 and all(isinstance(p, str) for p in v1["predictions"])
    v2 = httpx.post(u + "/v2/models/charops-chat/infer", timeout=30, json={
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["你好"]}],
        "parameters": {"character": "林小满", "max_tokens": 3}}).json()
    assert v2["outputs"][0]["name"] == "reply" and len(v2["outputs"][0]["data"]) == 1
    # The KServe routes refuse with the statuses and the error shape of the OpenAI routes.
    unknown = httpx.post(u + "/v1/models/charops-chat:predict", timeout=30, json={"instances": [
        {"messages": HELLO, "character": "无名"}]})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "character_not_found"
    bad = httpx.post(u + "/v1/models/charops-chat:predict", timeout=30, json={"instances": [3]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "instances"
    assert "charops_serve_batch_size_count" in httpx.get(u + "/metrics", timeout=10).text


def test_binds_loopback_only_and_no_grpc(served):
    children = psutil.Process(served.proc.pid)
    listening = [c.laddr for c in children.connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", served.port)]


def test_api_key_full_queue_and_sigterm(start_server, serve_model_dir):
    server = start_server("charops-chat", "--model", str(serve_model_dir), "--api-key", "s3cret",
                          "--max-queue", "1", "--max-batch-size", "1", "--max-tokens-cap", "400",
                          "--batch-wait-ms", "0")
    api = server.url + "/openai/v1/chat/completions"
    long = {"model": "charops-chat", "messages": HELLO, "max_tokens": 400, "min_tokens": 400}
    assert httpx.post(api, json=long, timeout=10).status_code == 401
    assert httpx.post(api, json=long, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200  # probes stay open
    auth = {"Authorization": "Bearer s3cret"}
    # One request runs, one waits, the rest find the queue full.
    statuses: list[int] = []

    def post() -> None:
        statuses.append(httpx.post(api, json=long, headers=auth, timeout=120).status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1 and set(statuses) <= {200, 429}
    key_client = openai.OpenAI(base_url=server.url + "/openai/v1", api_key="s3cret", max_retries=0, timeout=60)
    assert key_client.chat.completions.create(model="charops-chat", messages=HELLO, max_tokens=2).choices
    # SIGTERM while a reply streams: the reply still completes, then the process exits 0.
    with httpx.stream("POST", api, json={**long, "stream": True}, headers=auth, timeout=60) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
        server.proc.send_signal(signal.SIGTERM)
        rest = [ln for ln in lines if ln]
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "length"
    assert server.proc.wait(timeout=30) == 0
    assert "Traceback" not in server.log()
