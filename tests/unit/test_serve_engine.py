"""The continuous-batching engine, in process: batched rows equal single generate calls,
requests joining a running batch, the prefix cache (greedy replies identical with and without
it), per-request seeds and logits processors, the token budget, cancellation, draining, and
faults (a failed batch, a model that keeps failing, a dead worker).

    .venv/bin/python -m pytest tests/unit/test_serve_engine.py -x -q
"""

from __future__ import annotations

import threading

import pytest
import torch

from charops.serve.engine import (
    Engine,
    EngineStopped,
    GenerationFailed,
    GenRequest,
    InvalidRequest,
    QueueFull,
)
from charops.serve.kvcache import PrefixCache
from charops.serve.server import load_model

PROMPTS = ["你好，我是小明。", "Hello there, how are you doing today? I am reading",
           "（好奇）你在做什么呢？我在看书，是一本关于历史的书。我最喜欢", "I like tea"]
PROFILE = ("You are Tom, a cheerful gamer. You like tea, long walks, and talking with friends "
           "about music and games. ") * 4


@pytest.fixture(scope="module")
def loaded(micro_model_dir):
    return load_model(micro_model_dir)


@pytest.fixture()
def engines():
    """Engines a test starts; stopped at the end even when the test fails."""
    made: list[Engine] = []
    yield made
    for e in made:
        e.stop(timeout=10)


def _start(engines: list, model, tok, **kw) -> Engine:
    engine = Engine(model, tok, **kw)
    engine.start()
    engines.append(engine)
    return engine


def _ids(tok, prompt: str) -> list[int]:
    return tok(prompt, add_special_tokens=False)["input_ids"]


def _chat_ids(tok, user: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "system", "content": PROFILE}, {"role": "user", "content": user}],
                                   tokenize=False, add_generation_prompt=True)
    return _ids(tok, text)


def _direct(model, tok, ids: list[int], n: int, **kw) -> str:
    """One unpadded generate call: the reference a batched row must reproduce."""
    t = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        out = model.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=n,
                             do_sample=False, repetition_penalty=1.1,
                             eos_token_id=model.generation_config.eos_token_id,
                             pad_token_id=tok.pad_token_id, **kw)
    return tok.decode(out[0, t.shape[1]:], skip_special_tokens=True)


def _run(engine: Engine, reqs: list[GenRequest]) -> list[list[tuple]]:
    for r in reqs:
        r.attach_sync()
    for r in reqs:
        engine.submit(r)
    return [list(r.events()) for r in reqs]


def _common(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _greedy(ids: list[int], n: int, **kw) -> GenRequest:
    return GenRequest(input_ids=ids, max_new_tokens=n, min_new_tokens=n, temperature=0.0, **kw)


def test_batched_rows_match_single_generate_calls(loaded, engines):
    model, tok = loaded
    # A long wait makes all four start together: rows of different prompt lengths (left
    # padding) and different lengths of reply, which leave the batch one by one.
    engine = _start(engines, model, tok, max_batch_size=8, batch_wait_ms=300, batch_quiet_ms=300, prefill_chunk=4)
    reqs = [_greedy(_ids(tok, p), 8 + 4 * i) for i, p in enumerate(PROMPTS)]
    events = _run(engine, reqs)
    assert engine.largest_batch >= 3  # rows decoded together, not one after another
    for i, (prompt, req, evs) in enumerate(zip(PROMPTS, reqs, events, strict=True)):
        n = 8 + 4 * i
        assert req.text == _direct(model, tok, _ids(tok, prompt), n, min_new_tokens=n)
        assert "".join(v for k, v in evs if k == "text") == req.text  # the stream adds up to the reply
        assert evs[-1] == ("done", "length") and req.completion_tokens == n


def test_a_request_joins_a_running_batch_and_leaves_before_it_ends(loaded, engines):
    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=0)
    long = _greedy(_ids(tok, PROMPTS[0]), 400).attach_sync()
    engine.submit(long)
    events = long.events()
    assert next(events)[0] == "text"  # the long request is decoding
    short = _greedy(_ids(tok, PROMPTS[3]), 6)
    assert _run(engine, [short])[0][-1] == ("done", "length")
    # The short reply ended while the long one was still running, and batching did not
    # change either reply.
    assert not long.ended and long.completion_tokens < 400
    assert short.text == _direct(model, tok, _ids(tok, PROMPTS[3]), 6, min_new_tokens=6)
    rest = list(events)
    assert rest[-1] == ("done", "length")
    assert long.text == _direct(model, tok, _ids(tok, PROMPTS[0]), 400, min_new_tokens=400)
    assert engine.largest_batch == 2


def test_each_row_stops_at_its_own_limit_and_stop_string(loaded, engines):
    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=300, batch_quiet_ms=300)
    ids = _ids(tok, PROMPTS[1])
    full = _direct(model, tok, ids, 16, min_new_tokens=16)
    # A stop string that first appears inside the reply: the reply ends right before it.
    cut = next(i for i in range(3, len(full)) if full[i].strip() and full.find(full[i:i + 2]) == i)
    stop = full[cut:cut + 2]
    short, long = _greedy(ids, 3), _greedy(ids, 16)
    stopped = _greedy(ids, 16, stop=(stop,))
    events = _run(engine, [short, long, stopped])
    assert short.completion_tokens == 3 and short.finish_reason == "length"
    assert long.text == full and long.finish_reason == "length"
    assert stopped.finish_reason == "stop" and stopped.text == full[:cut]
    # Streamed text never includes (a part of) the stop string that is later taken back.
    assert "".join(v for k, v in events[2] if k == "text") == full[:cut]


def test_greedy_replies_are_identical_with_and_without_the_prefix_cache(loaded, engines):
    model, tok = loaded
    users = ["Hello!", "What do you like?", "Hello! How are you?", "Why?"]
    replies = {}
    for cache_bytes in (0, 64 << 20):
        engine = _start(engines, model, tok, batch_wait_ms=0, prefix_cache_bytes=cache_bytes, prefill_chunk=32)
        reqs = []
        for u in users:  # one at a time: each later request may reuse the earlier prompts' KV
            reqs += [_greedy(_chat_ids(tok, u), 12)]
            _run(engine, reqs[-1:])
        replies[cache_bytes] = [r.text for r in reqs]
        cached = [r.cached_tokens for r in reqs]
        if cache_bytes:
            # Each prompt reused the longest prefix it shares with an earlier one: at least
            # the rendered profile (everything before the user's turn).
            prompts = [r.input_ids for r in reqs]
            shared = [max((_common(p, q) for q in prompts[:i]), default=0) for i, p in enumerate(prompts)]
            assert cached == shared and min(shared[1:]) > len(_ids(tok, PROFILE))
            assert engine.prefix_cache.hits == 3
        else:
            assert cached == [0, 0, 0, 0] and len(engine.prefix_cache) == 0
    assert replies[0] == replies[64 << 20]
    assert replies[0][0] == _direct(model, tok, _chat_ids(tok, users[0]), 12, min_new_tokens=12)


def test_prefix_cache_keeps_shared_prefixes_and_stays_within_its_bytes():
    def kv(n: int, fill: float = 0.0):  # 2 layers, 1 head, dim 4: 64 bytes per token (k + v)
        return [(torch.full((1, 1, n, 4), fill), torch.full((1, 1, n, 4), fill)) for _ in range(2)]

    cache = PrefixCache(max_bytes=64 * 200, min_shared=4)
    profile = list(range(40))
    cache.insert(profile + [100, 101], kv(42, 1.0))
    # A second user of the same profile: the shared 40 tokens become an entry of their own.
    cache.insert(profile + [200], kv(41, 2.0))
    assert len(cache) == 3 and cache.bytes == 64 * (42 + 41 + 40)
    n, got = cache.lookup(profile + [300, 301])
    assert n == 40 and got[0][0].shape == (1, 1, 40, 4)
    # A chat's next turn extends its earlier prompt: the earlier entry is replaced.
    cache2 = PrefixCache(max_bytes=1 << 20)
    cache2.insert([1, 2, 3], kv(3))
    cache2.insert([1, 2, 3, 4, 5], kv(5))
    assert len(cache2) == 1 and cache2.lookup([1, 2, 3, 4, 5, 6])[0] == 5
    assert cache2.lookup([1, 2, 9], limit=1)[0] == 1  # never more than asked for
    assert cache2.lookup([7, 8])[0] == 0


def test_prefix_cache_evicts_least_recently_used_within_its_bytes():
    def kv(n: int):
        return [(torch.zeros((1, 1, n, 4)), torch.zeros((1, 1, n, 4)))]  # 32 bytes per token

    cache = PrefixCache(max_bytes=32 * 25)
    cache.insert([1] * 10, kv(10))
    cache.insert([2] * 10, kv(10))
    cache.lookup([1] * 10)  # [1]*10 is now the most recently used
    cache.insert([3] * 10, kv(10))  # 30 tokens > 25: the least recently used ([2]*10) goes
    assert cache.bytes <= 32 * 25 and len(cache) == 2
    assert cache.lookup([1] * 10)[0] == 10 and cache.lookup([2] * 10)[0] == 0
    cache.insert([4] * 30, kv(30))  # larger than the whole cache: not stored
    assert cache.lookup([4] * 30)[0] == 0


def test_seeded_sampling_is_reproducible_whatever_the_batch_mates(loaded, engines):
    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=200, batch_quiet_ms=200)
    ids = _ids(tok, PROMPTS[1])

    def sample(seed: int, mates: int) -> str:
        reqs = [GenRequest(input_ids=ids, max_new_tokens=16, temperature=1.0, top_p=0.95, seed=seed)]
        reqs += [GenRequest(input_ids=_ids(tok, PROMPTS[j % 4]), max_new_tokens=20, temperature=1.0)
                 for j in range(mates)]
        for r in reqs:
            r.attach_sync()
        engine.submit_all(reqs)
        for r in reqs:
            list(r.events())
        return reqs[0].text

    alone = sample(1234, 0)
    assert sample(1234, 3) == alone
    assert sample(1235, 0) != alone
    # The extremes of the seed range run (2**64 - 1 killed the old worker's manual_seed call).
    for seed in (2**64 - 1, -(2**63)):
        assert sample(seed, 1)


def test_bad_settings_are_refused_when_the_request_is_made():
    for bad in ({"seed": 2**64}, {"seed": -(2**63) - 1}, {"temperature": float("nan")},
                {"top_p": 0.0}, {"repetition_penalty": 0.0}, {"max_new_tokens": 0},
                {"min_new_tokens": 9}, {"stop": ("",)}, {"logits_processor": 3}, {"presence_penalty": 2.5},
                {"frequency_penalty": -2.01}, {"frequency_penalty": float("inf")}):
        with pytest.raises(InvalidRequest):
            GenRequest(**{"input_ids": [1, 2], "max_new_tokens": 8, **bad})


class _OpenAIPenalties:
    """OpenAI's presence/frequency penalties written out by hand, as a transformers logits
    processor for the reference generate call: each logit minus count * frequency +
    (count > 0) * presence, count = occurrences of the token in the reply so far."""

    def __init__(self, prompt_len: int, presence: float, frequency: float):
        self.prompt_len, self.presence, self.frequency = prompt_len, presence, frequency

    def __call__(self, input_ids, scores):
        from collections import Counter

        for row in range(input_ids.shape[0]):
            for token, count in Counter(input_ids[row, self.prompt_len:].tolist()).items():
                scores[row, token] -= count * self.frequency + self.presence
        return scores


def test_presence_and_frequency_penalties_follow_openais_formula(loaded, engines):
    from transformers import LogitsProcessorList

    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=200, batch_quiet_ms=200)
    ids = _ids(tok, PROMPTS[3])
    settings = [(0.0, 1.5), (1.2, 0.0), (0.7, -0.4)]
    reqs = [_greedy(ids, 16, presence_penalty=pp, frequency_penalty=fp) for pp, fp in settings] + [_greedy(ids, 16)]
    _run(engine, reqs)
    for (pp, fp), req in zip(settings, reqs, strict=False):
        ref = LogitsProcessorList([_OpenAIPenalties(len(ids), pp, fp)])
        assert req.text == _direct(model, tok, ids, 16, min_new_tokens=16, logits_processor=ref), (pp, fp)
    plain = reqs[-1].text
    assert plain == _direct(model, tok, ids, 16, min_new_tokens=16)
    assert any(r.text != plain for r in reqs[:-1])  # the penalties change what is generated


def test_logits_processor_steers_its_own_row_and_a_failing_one_fails_only_its_request(loaded, engines):
    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=200, batch_quiet_ms=200)
    ids = _ids(tok, PROMPTS[1])
    forced = _ids(tok, " tea")[0]
    seen: list[int] = []

    def only_tea(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen.append(len(input_ids))  # the prompt plus the tokens generated so far
        out = torch.full_like(scores, -float("inf"))
        out[forced] = 0.0
        return out

    def broken(input_ids, scores):
        raise ValueError("grammar state lost")

    steered = GenRequest(input_ids=ids, max_new_tokens=4, temperature=0.7, logits_processor=only_tea)
    failing = GenRequest(input_ids=ids, max_new_tokens=4, temperature=0.0, logits_processor=broken)
    plain = _greedy(ids, 6)
    events = _run(engine, [steered, failing, plain])
    assert steered.text == tok.decode([forced] * 4) and seen == [len(ids) + i for i in range(4)]
    assert events[1] == [("error", "ValueError: grammar state lost")]
    assert isinstance(failing.error, GenerationFailed)
    assert plain.text == _direct(model, tok, ids, 6, min_new_tokens=6)  # its batch mate went on


def test_token_budget_queues_what_does_not_fit(loaded, engines):
    model, tok = loaded
    ids = _ids(tok, PROMPTS[2])
    n = len(ids) + 10
    # Room for one row of the widest request: the second one waits until the first is done.
    engine = _start(engines, model, tok, max_batch_tokens=n + 5, batch_wait_ms=200, batch_quiet_ms=200)
    a, b = _greedy(ids, 10), _greedy(ids, 10)
    _run(engine, [a, b])
    assert a.text == b.text and engine.largest_batch == 1
    # A request larger than the whole budget is refused up front, not queued forever.
    with pytest.raises(InvalidRequest, match="tokens per batch"):
        engine.submit(_greedy(ids, n))
    wide = _start(engines, model, tok, max_batch_tokens=2 * n, batch_wait_ms=200, batch_quiet_ms=200)
    _run(wide, [_greedy(ids, 10), _greedy(ids, 10)])
    assert wide.largest_batch == 2


def test_full_queue_refuses_all_or_none_and_stop_fails_waiting_requests(loaded):
    model, tok = loaded
    engine = Engine(model, tok, max_queue=3)  # not started: nothing leaves the queue
    ids = _ids(tok, "你好")
    waiting = [GenRequest(input_ids=ids, max_new_tokens=4).attach_sync() for _ in range(2)]
    for r in waiting:
        engine.submit(r)
    with pytest.raises(QueueFull):  # two more do not fit: neither is queued
        engine.submit_all([GenRequest(input_ids=ids, max_new_tokens=4) for _ in range(2)])
    assert engine.queued == 2
    engine.stop()
    for r in waiting:
        [(kind, _)] = list(r.events())
        assert kind == "error" and isinstance(r.error, EngineStopped)
    with pytest.raises(EngineStopped):
        engine.submit(GenRequest(input_ids=ids, max_new_tokens=4))


def test_drain_starts_nothing_new_and_lets_running_rows_finish(loaded, engines):
    model, tok = loaded
    engine = _start(engines, model, tok, max_batch_size=1, batch_wait_ms=0)
    running = _greedy(_ids(tok, PROMPTS[0]), 60).attach_sync()
    queued = _greedy(_ids(tok, PROMPTS[1]), 4).attach_sync()
    engine.submit(running)
    events = running.events()
    assert next(events)[0] == "text"
    engine.submit(queued)  # max_batch_size 1: it waits
    engine.drain()
    assert not engine.healthy()
    assert list(queued.events())[0][0] == "error" and isinstance(queued.error, EngineStopped)
    assert queued.completion_tokens == 0
    assert list(events)[-1] == ("done", "length") and running.completion_tokens == 60
    with pytest.raises(EngineStopped):
        engine.submit(_greedy(_ids(tok, PROMPTS[1]), 4))


def test_stop_ends_rows_still_running_after_the_timeout_with_an_error(loaded, engines):
    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=0)
    req = _greedy(_ids(tok, PROMPTS[0]), 500).attach_sync()
    engine.submit(req)
    events = req.events()
    assert next(events)[0] == "text"
    engine.stop(timeout=0.05)
    assert list(events)[-1][0] == "error" and isinstance(req.error, EngineStopped)
    assert not engine.alive


def test_cancelled_request_frees_its_row(loaded, engines):
    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=0)
    req = _greedy(_ids(tok, "你好"), 400).attach_sync()
    engine.submit(req)
    for kind, _ in req.events():
        if kind == "text":
            req.cancel()
    assert req.finish_reason == "cancelled" and req.completion_tokens < 400


class _Faulty:
    """Wraps the model's forward: raises ``exc`` on the next ``times`` calls (None: always)."""

    def __init__(self, model, exc: BaseException, times: int | None):
        self.model, self.exc, self.times = model, exc, times
        self.real = model.forward

    def __call__(self, *args, **kwargs):
        if self.times is None or self.times > 0:
            if self.times is not None:
                self.times -= 1
            raise self.exc
        return self.real(*args, **kwargs)

    def __enter__(self):
        self.model.forward = self
        return self

    def __exit__(self, *exc):
        del self.model.forward  # back to the class's forward


def test_worker_survives_a_failed_batch(loaded, engines):
    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=200, batch_quiet_ms=200)
    ids = _ids(tok, PROMPTS[1])
    with _Faulty(model, RuntimeError("CUDA error: an illegal memory access"), times=1):
        first = _greedy(ids, 5)
        [(kind, message)] = _run(engine, [first])[0]
    assert kind == "error" and "illegal memory access" in message and isinstance(first.error, GenerationFailed)
    assert engine.alive and engine.healthy()  # the one-token probe passed
    again = _greedy(ids, 5)
    _run(engine, [again])
    assert again.text == _direct(model, tok, ids, 5, min_new_tokens=5)


def test_readiness_turns_false_while_the_model_keeps_failing_and_back_when_it_recovers(loaded, engines):
    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=0, probe_interval_s=0.1)
    ids = _ids(tok, PROMPTS[1])
    with _Faulty(model, RuntimeError("out of memory"), times=None):
        _run(engine, [_greedy(ids, 5)])
        assert engine.alive and not engine.healthy()
    for _ in range(100):  # the worker probes again every probe_interval_s while idle
        if engine.healthy():
            break
        threading.Event().wait(0.05)
    assert engine.healthy()


class _Killed(BaseException):
    """Not an Exception: stands in for what ends a thread (SystemExit, KeyboardInterrupt)."""


def test_a_dead_worker_fails_its_requests_refuses_new_ones_and_is_not_ready(loaded):
    model, tok = loaded
    engine = Engine(model, tok, batch_wait_ms=100, batch_quiet_ms=100)
    ids = _ids(tok, PROMPTS[1])
    with _Faulty(model, _Killed("worker killed"), times=None):
        engine.start()
        reqs = [_greedy(ids, 5), _greedy(ids, 5)]
        events = _run(engine, reqs)
        engine._thread.join(10)
    assert all(ev[-1][0] == "error" and isinstance(r.error, EngineStopped) for ev, r in zip(events, reqs, strict=True))
    assert not engine.alive and not engine.healthy()
    with pytest.raises(EngineStopped, match="worker has stopped"):
        engine.submit(_greedy(ids, 5))


def test_a_non_streaming_request_stops_when_its_client_disconnects(loaded, engines):
    import asyncio

    from charops.serve.openai_api import run_to_end

    model, tok = loaded
    engine = _start(engines, model, tok, batch_wait_ms=0)

    class GoneClient:
        """Stand-in for starlette's Request (run_to_end uses only is_disconnected): the
        client is gone from the first check on, as when its connection was reset."""

        checks = 0

        async def is_disconnected(self) -> bool:
            self.checks += 1
            return True

    async def ask() -> tuple[GenRequest, GoneClient]:
        req = _greedy(_ids(tok, "你好"), 480)
        events = req.attach_async(asyncio.get_running_loop())
        engine.submit(req)
        client = GoneClient()
        await run_to_end(req, events, client)
        return req, client

    req, client = asyncio.run(ask())
    assert client.checks >= 1
    assert req.finish_reason == "cancelled" and req.completion_tokens < 480
