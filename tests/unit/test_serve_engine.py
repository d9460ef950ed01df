"""The batching engine, in process: batched rows equal single generate calls, per-row limits,
stop strings, the bounded queue, shutdown.

    .venv/bin/python -m pytest tests/unit/test_serve_engine.py -x -q
"""

from __future__ import annotations

import threading

import pytest
import torch

from charops.serve.engine import Engine, EngineStopped, GenRequest, QueueFull
from charops.serve.server import load_model

PROMPTS = ["你好，我是小明。", "Hello there, how are you doing today? I am reading",
           "（好奇）你在做什么呢？我在看书，是一本关于历史的书。我最喜欢", "I like tea"]


@pytest.fixture(scope="module")
def loaded(micro_model_dir):
    return load_model(micro_model_dir)


def _direct(model, tok, prompt: str, n: int, **kw) -> str:
    """One unpadded generate call: the reference a batched row must reproduce."""
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]], device=model.device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                             do_sample=False, repetition_penalty=1.1,
                             eos_token_id=model.generation_config.eos_token_id,
                             pad_token_id=tok.pad_token_id, **kw)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _run(engine: Engine, reqs: list[GenRequest]) -> list[list[tuple]]:
    for r in reqs:
        r.attach_sync()
    for r in reqs:
        engine.submit(r)
    return [list(r.events()) for r in reqs]


def test_batched_rows_match_single_generate_calls(loaded):
    model, tok = loaded
    # A long wait makes all four one batch of different prompt lengths (left padding).
    engine = Engine(model, tok, max_batch_size=8, batch_wait_ms=300, batch_quiet_ms=300)
    engine.start()
    try:
        reqs = [GenRequest(input_ids=tok(p, add_special_tokens=False)["input_ids"], max_new_tokens=12,
                           min_new_tokens=12, temperature=0.0) for p in PROMPTS]
        events = _run(engine, reqs)
    finally:
        engine.stop()
    assert engine.largest_batch == len(PROMPTS) and engine.batches_run == 1
    for prompt, req, evs in zip(PROMPTS, reqs, events, strict=True):
        assert req.text == _direct(model, tok, prompt, 12, min_new_tokens=12)
        assert "".join(v for k, v in evs if k == "text") == req.text  # the stream adds up to the reply
        assert evs[-1] == ("done", "length") and req.completion_tokens == 12


def test_each_row_stops_at_its_own_limit_and_stop_string(loaded):
    model, tok = loaded
    engine = Engine(model, tok, batch_wait_ms=300, batch_quiet_ms=300)
    engine.start()
    ids = tok(PROMPTS[1], add_special_tokens=False)["input_ids"]
    full = _direct(model, tok, PROMPTS[1], 16, min_new_tokens=16)
    # A stop string that first appears inside the reply: the reply ends right before it.
    cut = next(i for i in range(3, len(full)) if full[i].strip() and full.find(full[i:i + 2]) == i)
    stop = full[cut:cut + 2]
    try:
        short = GenRequest(input_ids=ids, max_new_tokens=3, min_new_tokens=3, temperature=0.0)
        long = GenRequest(input_ids=ids, max_new_tokens=16, min_new_tokens=16, temperature=0.0)
        stopped = GenRequest(input_ids=ids, max_new_tokens=16, min_new_tokens=16, temperature=0.0, stop=(stop,))
        events = _run(engine, [short, long, stopped])
    finally:
        engine.stop()
    assert short.completion_tokens == 3 and short.finish_reason == "length"
    assert long.text == full and long.finish_reason == "length"
    assert stopped.finish_reason == "stop" and stopped.text == full[:cut]
    # Streamed text never includes (a part of) the stop string that is later taken back.
    assert "".join(v for k, v in events[2] if k == "text") == full[:cut]


def test_full_queue_refuses_and_stop_fails_waiting_requests(loaded):
    model, tok = loaded
    engine = Engine(model, tok, max_queue=2)  # not started: nothing leaves the queue
    ids = tok("你好", add_special_tokens=False)["input_ids"]
    waiting = [GenRequest(input_ids=ids, max_new_tokens=4).attach_sync() for _ in range(2)]
    for r in waiting:
        engine.submit(r)
    with pytest.raises(QueueFull):
        engine.submit(GenRequest(input_ids=ids, max_new_tokens=4))
    engine.stop()
    for r in waiting:
        assert list(r.events()) == [("error", "server is shutting down")]
    with pytest.raises(EngineStopped):
        engine.submit(GenRequest(input_ids=ids, max_new_tokens=4))


def test_cancelled_request_frees_its_row(loaded):
    model, tok = loaded
    engine = Engine(model, tok, batch_wait_ms=0)
    engine.start()
    ids = tok("你好", add_special_tokens=False)["input_ids"]
    req = GenRequest(input_ids=ids, max_new_tokens=400, min_new_tokens=400, temperature=0.0).attach_sync()
    first = threading.Event()
    try:
        engine.submit(req)
        for kind, _ in req.events():
            if kind == "text" and not first.is_set():
                first.set()
                req.cancelled = True
            if kind == "done":
                break
    finally:
        engine.stop()
    assert req.finish_reason == "cancelled" and req.completion_tokens < 400
