"""Continuous batching of generation: one worker thread, a bounded queue, per-request streams.

Requests (prompt token ids plus sampling settings) wait in a bounded queue. One worker thread
owns the model and runs a step loop over ``model(...)``: between two decoding steps, waiting
requests join the running batch (while the batch's row and token budgets allow) and finished
ones leave it, so a short request never waits for a long one to end. Each step decodes one
token for every running row in one forward pass over a left-padded, batched KV cache
(transformers' ``DynamicCache``, see :mod:`charops.serve.kvcache`). A new request's prompt is
prefilled on its own (batch 1), starting after the longest prefix whose KV the prefix cache
holds (the character's rendered profile, a chat's earlier turns). Each iteration of the loop
prefills up to ``prefill_chunk`` prompt tokens (a chunk of a long prompt, or the uncached parts
of several new requests, which then join the batch together) and runs one decoding step, so a
long prompt never stalls the running rows for long::

    from charops.serve.engine import Engine, GenRequest
    engine = Engine(model, tokenizer, max_batch_size=8, max_queue=64, max_batch_tokens=16384)
    engine.start()
    req = GenRequest(input_ids=tokenizer("Hello")["input_ids"], max_new_tokens=32).attach_sync()
    engine.submit(req)
    for event in req.events():        # ("text", str) ... then ("done", finish_reason)
        print(event)
    engine.stop()

**Interface** (the HTTP layer, the KServe model and the benchmark use only this):

- :class:`GenRequest` — one reply. Fields set by the caller: ``input_ids``, ``max_new_tokens``,
  ``temperature`` (0: greedy), ``top_p``, ``repetition_penalty`` (1: off), ``presence_penalty``
  and ``frequency_penalty`` (OpenAI's, -2 to 2, 0: off: each logit minus
  ``count * frequency_penalty + (count > 0) * presence_penalty``, count being how often the reply
  so far has the token), ``min_new_tokens``,
  ``stop`` (strings; the reply ends before the first), ``seed`` (None, or an integer in
  ``[-2**63, 2**64)``: the request gets its own ``torch.Generator``, so seeded sampling gives
  the same reply whatever else is in the batch), ``logits_processor`` (None, or
  ``callable(input_ids_row, scores_row) -> scores_row``: ``input_ids_row`` is the 1-D prompt
  plus the tokens generated so far (a read-only view: copy it to keep it), ``scores_row`` the
  1-D float32 logits after the penalties and ``min_new_tokens``, before temperature
  and top-p; it may modify them in place.
  Used for ``logit_bias`` and grammar-constrained output; one object per request, as it may
  keep state). Bad values raise :class:`InvalidRequest` at construction.
  Filled in by the engine: ``text``, ``completion_tokens``, ``finish_reason`` (``stop``,
  ``length`` or ``cancelled``), ``error`` (an :class:`EngineError` when it failed),
  ``cached_tokens`` (prompt tokens taken from the prefix cache), ``first_token_at``.
  :meth:`GenRequest.cancel` (or setting ``cancelled``) stops it between two decoding steps.
- Events, in order, through :meth:`GenRequest.attach_async` (an ``asyncio.Queue``) or
  :meth:`GenRequest.attach_sync` + :meth:`GenRequest.events`: ``("text", delta)`` any number
  of times, then either ``("done", finish_reason)`` or ``("error", message)``. After an error
  ``req.error`` says what kind: :class:`EngineStopped` (the server is shutting down or its
  worker is gone: HTTP 503) or :class:`GenerationFailed` (HTTP 500).
- :meth:`Engine.submit` queues one request; :meth:`Engine.submit_all` queues several (the
  ``n`` candidates of one OpenAI request; give each its own seed) all or none, and they join
  the batch at the same step. Both raise :class:`QueueFull` (HTTP 429), :class:`EngineStopped`
  (503) or :class:`InvalidRequest` (400: a token id outside the vocabulary, prompt plus
  ``max_new_tokens`` over the context or over ``max_batch_tokens``).
- :meth:`Engine.arriving`: a context manager around reading and tokenizing a request, so an
  idle engine about to start waits briefly for requests that come in together.
- :meth:`Engine.drain` (on SIGTERM): start nothing new, fail the queued requests with
  :class:`EngineStopped`, let the running rows finish. :meth:`Engine.stop`: drain, wait up to
  ``timeout`` s, then end what still runs with an :class:`EngineStopped` error.
- :attr:`Engine.alive` (the worker thread runs) and :meth:`Engine.healthy` (alive, not
  draining, and the model answers: after a failed step the worker runs a one-token probe, and
  repeats it every few seconds while it fails). Readiness probes report :meth:`Engine.healthy`.

**Limits.** ``max_batch_size`` rows decode together; ``max_batch_tokens`` caps the KV cache of
the running batch: rows x the longest row's prompt plus ``max_new_tokens`` (the batch is
left-padded to its longest row); a request that does not fit waits in the queue (FIFO) until
rows leave; ``max_queue`` requests wait at most, beyond that :class:`QueueFull`.

**Failures.** The worker survives any ``Exception``: a failed step fails the rows it ran (the
other requests go on), a failing ``logits_processor`` (or one that allows no token) fails only
its own request. Seeds are checked when the request is made, so one cannot fail a step. If
the thread itself dies (a ``BaseException``), every waiting and running request gets an
:class:`EngineStopped` error, :meth:`submit` refuses, and :meth:`healthy` turns false.

**Why not transformers' continuous batching.** transformers 5's ``generate_batch`` /
``init_continuous_batching`` runs on this CPU (a 2-row smoke test took 36 s for 8 tokens,
mostly setting up its paged cache), but it cannot carry what the server needs per request: a
``torch.Generator`` per request (its sampling draws from one generator), a per-request
logits processor (its processors are the generation config's, shared by all requests; only
temperature, top-k and top-p have per-request variants), a per-request repetition penalty,
stop strings and cancellation. So the engine keeps its own step loop over ``model(...)``.

The engine imports no web framework: the server and the benchmark use it the same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from charops.serve.kvcache import KV, BatchCache, PrefixCache, cache_from, kv_of

log = logging.getLogger("charops.serve")

SEED_MIN, SEED_MAX = -(1 << 63), (1 << 64) - 1  # what torch.Generator.manual_seed takes
LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class EngineError(Exception):
    """Base of the engine's refusals and failures."""


class QueueFull(EngineError):
    """The engine's queue is at capacity: try again later (HTTP 429)."""


class EngineStopped(EngineError):
    """The engine is shutting down, or its worker is gone, and takes no more requests (HTTP 503)."""


class InvalidRequest(EngineError, ValueError):
    """A request the engine cannot run as given (HTTP 400)."""


class GenerationFailed(EngineError):
    """Generating this request failed; the engine goes on with the others (HTTP 500)."""


@dataclasses.dataclass(eq=False)
class GenRequest:
    """One generation: prompt token ids, sampling settings, and the stream its results go to.

    See the module docstring for every field and the events."""

    input_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logits_processor: LogitsProcessor | None = dataclasses.field(default=None, repr=False)
    # Filled in by the engine.
    text: str = dataclasses.field(default="", init=False)
    completion_tokens: int = dataclasses.field(default=0, init=False)
    finish_reason: str | None = dataclasses.field(default=None, init=False)
    error: EngineError | None = dataclasses.field(default=None, init=False)
    cancelled: bool = dataclasses.field(default=False, init=False)
    cached_tokens: int = dataclasses.field(default=0, init=False)
    submitted_at: float | None = dataclasses.field(default=None, init=False)
    first_token_at: float | None = dataclasses.field(default=None, init=False)
    _sink: Callable[[tuple], None] | None = dataclasses.field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = dataclasses.field(default=None, init=False, repr=False)
    _queue: asyncio.Queue | None = dataclasses.field(default=None, init=False, repr=False)
    _sync: queue.SimpleQueue | None = dataclasses.field(default=None, init=False, repr=False)
    _ended: bool = dataclasses.field(default=False, init=False, repr=False)
    _group: list | None = dataclasses.field(default=None, init=False, repr=False)  # submitted together

    def __post_init__(self) -> None:
        def bad(msg: str) -> InvalidRequest:
            return InvalidRequest(msg)

        if not isinstance(self.input_ids, list) or not self.input_ids or \
                not all(isinstance(t, int) and not isinstance(t, bool) for t in self.input_ids):
            raise bad("input_ids must be a non-empty list of token ids")
        for name in ("max_new_tokens", "min_new_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(f"{name} must be an integer, not {v!r}")
        if self.max_new_tokens < 1:
            raise bad(f"max_new_tokens is {self.max_new_tokens}; it must be at least 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise bad(f"min_new_tokens is {self.min_new_tokens}; it must be from 0 to max_new_tokens")
        for name in ("temperature", "top_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(f"{name} must be a finite number, not {v!r}")
            if name in ("presence_penalty", "frequency_penalty") and not -2 <= v <= 2:
                raise bad(f"{name} is {v}; it must be from -2 to 2")
        if self.temperature < 0:
            raise bad(f"temperature is {self.temperature}; it must be 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            raise bad(f"top_p is {self.top_p}; it must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise bad(f"repetition_penalty is {self.repetition_penalty}; it must be above 0")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not SEED_MIN <= self.seed <= SEED_MAX):
            raise bad(f"seed {self.seed!r} is not an integer from -2**63 to 2**64-1")
        self.stop = tuple(self.stop)
        if not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop strings must be non-empty strings")
        if self.logits_processor is not None and not callable(self.logits_processor):
            raise bad("logits_processor must be callable")

    # -- control ----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating (the client went away): honoured between two decoding steps."""
        self.cancelled = True

    @property
    def ended(self) -> bool:
        """The request has had its last event (done or error)."""
        return self._ended

    # -- events -----------------------------------------------------------------------------
    def attach_async(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
        """Deliver events to an asyncio queue on ``loop`` (the server's way)."""
        self._loop, self._queue = loop, asyncio.Queue()
        self._sink = lambda ev: loop.call_soon_threadsafe(self._queue.put_nowait, ev)
        return self._queue

    def attach_sync(self) -> GenRequest:
        """Deliver events to a thread-safe queue read by :meth:`events`."""
        self._sync = queue.SimpleQueue()
        self._sink = self._sync.put
        return self

    def events(self) -> Iterator[tuple]:
        """Blocking iterator over events (for callers without an event loop)."""
        if self._sync is None:
            raise RuntimeError("call GenRequest.attach_sync() before submitting")
        while True:
            ev = self._sync.get()
            yield ev
            if ev[0] in ("done", "error"):
                return

    def _emit(self, event: tuple) -> None:
        if self._ended:
            return
        if event[0] in ("done", "error"):
            self._ended = True
        outbox = getattr(_step_events, "outbox", None)
        if outbox is not None and self._loop is not None:
            outbox.append(self)  # delivered with the rest of the step's events (one wake-up)
            outbox.append(event)
        elif self._sink is not None:
            try:
                self._sink(event)
            except RuntimeError:  # the receiving event loop is closed: nobody listens any more
                self.cancelled = True

    def _fail(self, error: EngineError) -> None:
        if not self._ended:
            self.error = error
            self._emit(("error", str(error)))

    def _finish(self, reason: str) -> None:
        if not self._ended:
            self.finish_reason = reason
            self._emit(("done", reason))


_step_events = threading.local()  # the worker's outbox while it runs a step


@contextlib.contextmanager
def _one_wakeup_per_step() -> Iterator[None]:
    """Collect the events a step emits to asyncio queues; deliver them with one
    ``call_soon_threadsafe`` per event loop, not one per token per row: each call wakes the
    loop, which then competes with the worker for the GIL."""
    _step_events.outbox = outbox = []
    try:
        yield
    finally:
        _step_events.outbox = None
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for req, event in zip(outbox[::2], outbox[1::2], strict=True):
            by_loop.setdefault(req._loop, []).append((req._queue, event))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # that event loop is closed: nobody listens any more
                for req in outbox[::2]:
                    if req._loop is loop:
                        req.cancelled = True


def _put_all(items: list[tuple[asyncio.Queue, tuple]]) -> None:
    for q, event in items:
        q.put_nowait(event)


class _Row:
    """One running reply: its tokens, sampling state, and incremental decoding into text."""

    def __init__(self, req: GenRequest, tokenizer: Any, eos_ids: list[int], device: torch.device):
        self.req = req
        self.tok = tokenizer
        self.eos_ids = set(eos_ids)
        self.eos_t = torch.tensor(eos_ids, dtype=torch.long, device=device)
        # Prompt + generated tokens (the repetition penalty's and the logits processor's view),
        # in a tensor with room for the whole reply: no list-to-tensor conversion per step.
        self.seen = torch.empty(len(req.input_ids) + req.max_new_tokens, dtype=torch.long, device=device)
        self.seen[:len(req.input_ids)] = torch.tensor(req.input_ids, dtype=torch.long)
        self.n_seen = len(req.input_ids)
        self.ids: list[int] = []  # generated
        self.pos = len(req.input_ids)  # position of the next token fed to the model
        self.sent = 0  # characters of the decoded text already streamed
        self.done = False
        self.gen: torch.Generator | None = None
        if req.seed is not None and req.temperature > 0:
            self.gen = torch.Generator(device=device)
            self.gen.manual_seed(req.seed % (1 << 64))

    @property
    def last(self) -> int:
        return self.ids[-1]

    def choose(self, scores: torch.Tensor) -> int:
        """The next token from this row's float32 logits ``[vocab]`` (modified in place)."""
        req = self.req
        seen = self.seen[:self.n_seen]
        if req.repetition_penalty != 1.0:  # as transformers' RepetitionPenaltyLogitsProcessor
            s = scores.gather(0, seen)
            scores.scatter_(0, seen, torch.where(s < 0, s * req.repetition_penalty, s / req.repetition_penalty))
        if (req.presence_penalty or req.frequency_penalty) and self.ids:  # as OpenAI: the reply's tokens
            tokens, counts = torch.tensor(self.ids, device=scores.device).unique(return_counts=True)
            scores.index_add_(0, tokens, -(counts.to(scores.dtype) * req.frequency_penalty + req.presence_penalty))
        if len(self.ids) < req.min_new_tokens:
            scores[self.eos_t] = -math.inf
        if req.logits_processor is not None:
            scores = req.logits_processor(seen, scores)
        if req.temperature <= 0:
            token = int(scores.argmax())
            if not math.isfinite(float(scores[token])):
                raise GenerationFailed("no token is allowed (every logit is -inf or NaN)")
            return token
        scores = scores / req.temperature
        if req.top_p < 1.0:  # as transformers' TopPLogitsWarper
            sorted_logits, order = torch.sort(scores, descending=False)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cum <= (1 - req.top_p)
            remove[-1] = False
            scores = scores.masked_fill(remove.scatter(0, order, remove), -math.inf)
        probs = scores.softmax(dim=-1)
        if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
            raise GenerationFailed("no token is allowed (every logit is -inf or NaN)")
        return int(torch.multinomial(probs, 1, generator=self.gen))

    def add(self, token: int) -> None:
        """Take the chosen token: stream the new text, finish on end of turn, stop or length."""
        req = self.req
        if req.first_token_at is None:
            req.first_token_at = time.monotonic()
        if token in self.eos_ids and len(self.ids) >= req.min_new_tokens:
            return self._finish("stop")
        self.ids.append(token)
        self.seen[self.n_seen] = token
        self.n_seen += 1
        req.completion_tokens = len(self.ids)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in req.stop) if i >= 0]
        if hits:
            self._send(text[:min(hits)])
            return self._finish("stop")
        if len(self.ids) >= req.max_new_tokens:
            self._send(text)
            return self._finish("length")
        # Hold back an incomplete UTF-8 sequence (byte-level BPE) and anything that may be the
        # start of a stop string, so a client never sees text that is later taken back.
        safe = len(text.rstrip("\ufffd"))
        for s in req.stop:
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:k]):
                    safe -= k
                    break
        self._send(text[:safe])

    def _send(self, text: str) -> None:
        if len(text) > self.sent:
            self.req._emit(("text", text[self.sent:]))
            self.sent = len(text)
            self.req.text = text

    def _finish(self, reason: str) -> None:
        self.done = True
        self.req._finish(reason)

    def fail(self, error: EngineError) -> None:
        self.done = True
        self.req._fail(error)


class _Prefill:
    """A request being prefilled: its own batch-1 cache, filled chunk by chunk."""

    def __init__(self, req: GenRequest):
        self.req = req
        self.cache = None
        self.done = 0  # prompt tokens in the cache


class Engine:
    """Owns the model; one worker thread runs the continuous-batching step loop."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 8, max_queue: int = 64,
                 max_batch_tokens: int = 16384, prefill_chunk: int = 512, prefix_cache_bytes: int = 256 << 20,
                 batch_wait_ms: float = 50.0, batch_quiet_ms: float = 5.0, probe_interval_s: float = 5.0,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch_size < 1 or max_queue < 0 or max_batch_tokens < 1 or prefill_chunk < 1 or prefix_cache_bytes < 0:
            raise ValueError("engine limits must be positive")
        self.model = model
        self.tok = tokenizer
        self.on_batch = on_batch  # e.g. a Prometheus histogram of rows per decoding step
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_batch_tokens = max_batch_tokens
        self.prefill_chunk = prefill_chunk
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.batch_quiet_s = min(batch_quiet_ms, batch_wait_ms) / 1000.0
        self.probe_interval_s = probe_interval_s
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        gen = model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_ids: list[int] = [eos] if isinstance(eos, int) else list(eos or [])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else gen.pad_token_id
        self.pad_id: int = pad if pad is not None else self.eos_ids[0]
        self.device = model.device

        self._pending: collections.deque[GenRequest] = collections.deque()
        self._cond = threading.Condition()
        self._last_arrival = 0.0
        self._being_read = 0  # requests the server is reading and tokenizing (see arriving())
        self._draining = False
        self._abort = False
        self._thread: threading.Thread | None = None
        self._dead: str | None = None  # why the worker thread ended, if it died
        self._model_ok = True  # the last step or probe ran
        self._last_probe = 0.0
        # Owned by the worker thread.
        self._rows: list[_Row] = []
        self._batch = BatchCache()
        self._prefilling: collections.deque[_Prefill] = collections.deque()
        self._ready: list[tuple[_Row, KV]] = []  # prefilled this iteration, about to join
        # Counters (the tests and the benchmark read them).
        self.steps = 0
        self.largest_batch = 0
        self.failed_steps = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._worker, name="charops-generate", daemon=True)
        self._thread.start()

    def drain(self) -> None:
        """Start nothing new: refuse submits, fail the queued requests; running rows go on."""
        with self._cond:
            self._draining = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for req in waiting:
            req._fail(EngineStopped("the server is shutting down; the request was not started"))

    def stop(self, timeout: float = 30.0) -> None:
        """Drain, wait up to ``timeout`` s for the running rows, then end the rest with an error."""
        self.drain()
        if self._thread is None:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort = True
            with self._cond:
                self._cond.notify_all()
            self._thread.join(10.0)

    @property
    def alive(self) -> bool:
        """The worker thread is running."""
        return self._thread is not None and self._thread.is_alive() and self._dead is None

    def healthy(self) -> bool:
        """Ready for traffic: the worker runs, the engine is not draining, the model answers."""
        return self.alive and not self._draining and self._model_ok

    # -- requests ---------------------------------------------------------------------------
    def submit(self, req: GenRequest) -> None:
        self.submit_all([req])

    def submit_all(self, reqs: Sequence[GenRequest]) -> None:
        """Queue ``reqs`` all or none; they join the running batch at the same step."""
        reqs = list(reqs)
        if not reqs:
            return
        if len(reqs) > self.max_batch_size:
            raise InvalidRequest(f"{len(reqs)} replies at once; this server decodes at most {self.max_batch_size}")
        tokens = 0
        for req in reqs:
            self._check(req)
            tokens = max(tokens, len(req.input_ids) + req.max_new_tokens)
        if tokens * len(reqs) > self.max_batch_tokens:
            raise InvalidRequest(f"{len(reqs)} x {tokens} tokens (prompt plus max_tokens) is over this server's "
                                 f"{self.max_batch_tokens} tokens per batch; ask for fewer tokens or replies")
        with self._cond:
            if self._draining:
                raise EngineStopped("the server is shutting down")
            if self._dead is not None:
                raise EngineStopped(f"the generate worker has stopped ({self._dead})")
            if len(self._pending) + len(reqs) > self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting (the queue holds {self.max_queue})")
            now = time.monotonic()
            for req in reqs:
                req.submitted_at = now
                req._group = reqs if len(reqs) > 1 else None  # admitted as one
                self._pending.append(req)
            self._last_arrival = now
            self._cond.notify()

    def _check(self, req: GenRequest) -> None:
        n = len(req.input_ids)
        if min(req.input_ids) < 0 or max(req.input_ids) >= self.vocab_size:
            raise InvalidRequest(f"a prompt token id is outside the vocabulary (0 to {self.vocab_size - 1})")
        if self.max_context is not None and n + req.max_new_tokens > self.max_context:
            raise InvalidRequest(f"the prompt is {n} tokens; with {req.max_new_tokens} new tokens it exceeds "
                                 f"the model's {self.max_context}-token context")
        if n + req.max_new_tokens > self.max_batch_tokens:
            raise InvalidRequest(f"the prompt is {n} tokens; with {req.max_new_tokens} new tokens it is over this "
                                 f"server's {self.max_batch_tokens} tokens per batch")

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Wrap reading and tokenizing a request: an idle engine about to start waits for it."""
        with self._cond:
            self._being_read += 1
        try:
            yield
        finally:
            with self._cond:
                self._being_read -= 1

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        """Rows decoding or being prefilled now."""
        return len(self._rows) + len(self._prefilling)

    # -- the worker -------------------------------------------------------------------------
    def _worker(self) -> None:
        try:
            while self._wait_for_work():
                try:
                    self._admit()
                    self._iteration()
                except Exception as exc:  # one bad step must not take the server down
                    self._step_failed(exc)
        except BaseException as exc:
            # Not re-raised: the thread ends either way, and every request it held is failed
            # below; healthy() now says so, so the readiness probe takes the pod out.
            self._dead = f"{type(exc).__name__}: {exc}"
            log.exception("the generate worker died")
        finally:
            self._end_everything()

    def _wait_for_work(self) -> bool:
        """Block until there is something to do; False when the worker should end."""
        if self._abort:
            return False
        if self._rows or self._prefilling:
            return True
        with self._cond:
            while not self._pending:
                if self._draining:
                    return False
                if not self._model_ok:
                    self._cond.wait(self.probe_interval_s)
                    if not self._model_ok and time.monotonic() - self._last_probe >= self.probe_interval_s:
                        self._cond.release()
                        try:
                            self._probe()
                        finally:
                            self._cond.acquire()
                else:
                    self._cond.wait()
        # Concurrent clients arrive a few milliseconds apart: an idle engine waits while
        # requests keep arriving (gaps under batch_quiet), at most batch_wait, so a burst
        # decodes together from its first step. Requests being read (``arriving``) count.
        deadline = time.monotonic() + self.batch_wait_s
        while len(self._pending) < self.max_batch_size and not self._draining:
            now = time.monotonic()
            quiet = self._last_arrival + self.batch_quiet_s - now
            if now >= deadline or (quiet <= 0 and self._being_read <= 0):
                break
            time.sleep(min(max(quiet, 0.0005), deadline - now))
        return True

    def _budget(self) -> tuple[int, int]:
        """(rows, widest row in tokens: prompt + max_new_tokens) running or being prefilled."""
        reqs = [r.req for r in self._rows] + [p.req for p in self._prefilling] + [r.req for r, _ in self._ready]
        return len(reqs), max((len(r.input_ids) + r.max_new_tokens for r in reqs), default=0)

    def _admit(self) -> None:
        """Move queued requests into prefill while the row and token budgets allow (FIFO)."""
        with self._cond:
            for req in [r for r in self._pending if r.cancelled]:
                self._pending.remove(req)
                req._finish("cancelled")
            rows, width = self._budget()
            while self._pending and not self._draining:
                head = self._pending[0]
                group = [r for r in head._group or [head] if r is head or r in self._pending]
                need = max(len(r.input_ids) + r.max_new_tokens for r in group)
                new_rows, new_width = rows + len(group), max(width, need)
                if rows and (new_rows > self.max_batch_size or new_rows * new_width > self.max_batch_tokens):
                    break
                for r in group:
                    self._pending.remove(r)
                    self._prefilling.append(_Prefill(r))
                rows, width = new_rows, new_width

    def _iteration(self) -> None:
        """Up to ``prefill_chunk`` prompt tokens of prefill (several requests when their
        uncached parts are short), the finished ones join the batch together, then one
        decoding step."""
        with torch.inference_mode(), _one_wakeup_per_step():
            budget = self.prefill_chunk
            while self._prefilling and budget > 0:
                if self._prefilling[0].req.cancelled:
                    self._prefilling.popleft().req._finish("cancelled")
                    continue
                budget -= self._prefill_chunk(self._prefilling[0], budget)
            if self._ready:
                self._batch.join([kv for _, kv in self._ready])
                self._rows += [row for row, _ in self._ready]
                self._ready = []
            if self._rows:
                self._decode_step()

    def _prefill_chunk(self, job: _Prefill, limit: int) -> int:
        """Prefill up to ``limit`` more tokens of ``job``; the number of tokens computed."""
        req = job.req
        n = len(req.input_ids)
        try:
            if job.cache is None:
                # Reuse the longest cached prefix; at least the last prompt token is computed,
                # as its logits give the first new token.
                job.done, kv = self.prefix_cache.lookup(req.input_ids, limit=n - 1)
                req.cached_tokens = job.done
                job.cache = cache_from(kv)
            end = min(job.done + limit, n)
            ids = torch.tensor([req.input_ids[job.done:end]], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, attention_mask=torch.ones((1, end), dtype=torch.long, device=self.device),
                             position_ids=torch.arange(job.done, end, device=self.device)[None],
                             cache=job.cache, use_cache=True, logits_to_keep=1)
        except Exception as exc:
            self._prefilling.popleft()
            self._model_failed(exc, [req])
            return limit
        computed, job.done = end - job.done, end
        self._model_ok = True
        if end < n:
            return computed
        self._prefilling.popleft()
        kv = kv_of(job.cache)
        self.prefix_cache.insert(req.input_ids, kv)
        row = _Row(req, self.tok, self.eos_ids, self.device)
        try:
            row.add(row.choose(out.logits[0, -1].float()))
        except Exception as exc:
            row.fail(exc if isinstance(exc, GenerationFailed) else GenerationFailed(f"{type(exc).__name__}: {exc}"))
            return computed
        if not row.done:
            self._ready.append((row, kv))  # joins the batch with the others ready this iteration
        return computed

    def _decode_step(self) -> None:
        # Rows whose client went away leave before the step.
        if any(r.req.cancelled for r in self._rows):
            for r in self._rows:
                if r.req.cancelled:
                    r._finish("cancelled")
            self._leave()
            if not self._rows:
                return
        rows = self._rows
        ids = torch.tensor([[r.last] for r in rows], dtype=torch.long, device=self.device)
        pos = torch.tensor([[r.pos] for r in rows], dtype=torch.long, device=self.device)
        mask = torch.cat([self._batch.mask, self._batch.mask.new_ones((len(rows), 1))], dim=1)
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                             cache=self._batch.cache, use_cache=True)
        except Exception as exc:
            self._model_failed(exc, [r.req for r in rows])
            return
        self._batch.mask = mask
        self._model_ok = True
        self.steps += 1
        self.largest_batch = max(self.largest_batch, len(rows))
        if self.on_batch is not None:
            self.on_batch(len(rows))
        logits = out.logits[:, -1, :].float()
        for i, row in enumerate(rows):
            row.pos += 1
            try:
                row.add(row.choose(logits[i]))
            except Exception as exc:  # this row's processor or sampling: fail only this request
                row.fail(exc if isinstance(exc, GenerationFailed) else GenerationFailed(f"{type(exc).__name__}: {exc}"))
        self._leave()

    def _leave(self) -> None:
        keep = [i for i, r in enumerate(self._rows) if not r.done]
        if len(keep) != len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            self._batch.keep(keep)

    # -- failures ---------------------------------------------------------------------------
    def _model_failed(self, exc: Exception, reqs: list[GenRequest]) -> None:
        """A forward pass raised: fail the requests it ran, reset the batch, probe the model."""
        self.failed_steps += 1
        log.error("generation step failed: %s: %s", type(exc).__name__, exc)
        error = GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")
        if any(r.req in reqs for r in self._rows):  # the batch cache may be half-updated
            reqs = reqs + [r.req for r in self._rows if r.req not in reqs]
            self._rows = []
            self._batch = BatchCache()
        self._probe()  # before the requests hear of it, so healthy() is already up to date
        for req in reqs:
            req._fail(error)

    def _step_failed(self, exc: Exception) -> None:
        """Anything else in an iteration raised: fail what ran, start from a clean state."""
        self._model_failed(exc, [r.req for r in self._rows] + [p.req for p in self._prefilling]
                           + [r.req for r, _ in self._ready])
        self._rows, self._batch, self._prefilling, self._ready = [], BatchCache(), collections.deque(), []

    def _probe(self) -> None:
        """One token through the model on a fresh cache: can it still generate at all?"""
        self._last_probe = time.monotonic()
        try:
            with torch.inference_mode():
                ids = torch.tensor([[self.eos_ids[0]]], dtype=torch.long, device=self.device)
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
            self._model_ok = True
        except Exception as exc:
            log.error("the model fails a one-token probe: %s: %s", type(exc).__name__, exc)
            self._model_ok = False

    def _end_everything(self) -> None:
        """The worker is ending: nothing it holds or that waits may hang."""
        why = (f"the generate worker has stopped ({self._dead})" if self._dead
               else "the server shut down before the reply was finished")
        with self._cond:
            waiting = list(self._pending)
            self._pending.clear()
        for req in [r.req for r in self._rows] + [p.req for p in self._prefilling] + \
                [r.req for r, _ in self._ready] + waiting:
            req._fail(EngineStopped(why))
        self._rows, self._batch, self._prefilling, self._ready = [], BatchCache(), collections.deque(), []
