"""Dynamic batching of ``generate`` calls: one worker thread, a bounded queue, per-request streams.

Requests (token ids plus sampling settings) wait in a bounded queue; the worker takes the
oldest one and every waiting request with the same sampling settings (up to
``max_batch_size``), left-pads them into one batch and runs one ``model.generate``. Each row
stops on its own (end of turn, its own ``max_new_tokens``, a stop string, or the client going
away): a stopping criterion that sees every new token decodes it, hands the new text to the
request's stream and tells ``generate`` which rows are done. A full queue raises
:class:`QueueFull` (the server answers 429) instead of growing without bound::

    from charops.serve.engine import Engine, GenRequest
    engine = Engine(model, tokenizer, max_batch_size=8, max_queue=64)
    engine.start()
    req = GenRequest(input_ids=tokenizer("你好")["input_ids"], max_new_tokens=32)
    engine.submit(req)
    for event in req.events():        # ("text", str) ... then ("done", finish_reason)
        print(event)
    engine.stop()

The engine imports no web framework: the server and the benchmark use it the same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList


class QueueFull(Exception):
    """The engine's queue is at capacity: try again later (HTTP 429)."""


class EngineStopped(Exception):
    """The engine is shutting down and takes no more requests (HTTP 503)."""


@dataclasses.dataclass(eq=False)
class GenRequest:
    """One generation: prompt token ids, sampling settings, and the stream its results go to."""

    input_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Filled in by the engine.
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    cancelled: bool = False
    _sink: Callable[[tuple], None] | None = dataclasses.field(default=None, repr=False)
    _sync: queue.SimpleQueue | None = dataclasses.field(default=None, repr=False)

    @property
    def batch_key(self) -> tuple:
        """Requests batch together only when ``generate`` would treat them identically."""
        if self.temperature <= 0:
            return ("greedy", self.repetition_penalty, self.min_new_tokens)
        return ("sample", self.temperature, self.top_p, self.repetition_penalty,
                self.min_new_tokens, self.seed)

    def attach_async(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
        """Deliver events to an asyncio queue on ``loop`` (the server's way)."""
        q: asyncio.Queue = asyncio.Queue()
        self._sink = lambda ev: loop.call_soon_threadsafe(q.put_nowait, ev)
        return q

    def events(self) -> Iterator[tuple]:
        """Blocking iterator over events (for callers without an event loop)."""
        if self._sync is None:
            raise RuntimeError("call GenRequest.attach_sync() before submitting")
        while True:
            ev = self._sync.get()
            yield ev
            if ev[0] in ("done", "error"):
                return

    def attach_sync(self) -> GenRequest:
        self._sync = queue.SimpleQueue()
        self._sink = self._sync.put
        return self

    def _emit(self, event: tuple) -> None:
        if self._sink is not None:
            self._sink(event)


class _Row:
    """Incremental decoding of one batch row: new text, stop strings, its own limits."""

    def __init__(self, req: GenRequest, tokenizer: Any, eos_ids: set[int]):
        self.req = req
        self.tok = tokenizer
        self.eos_ids = eos_ids
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded text already streamed
        self.done = False

    def add(self, token: int) -> None:
        req = self.req
        if req.cancelled:
            return self._finish("cancelled")
        if token in self.eos_ids and len(self.ids) >= req.min_new_tokens:
            return self._finish("stop")
        self.ids.append(token)
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
        self.req.finish_reason = reason
        self.req._emit(("done", reason))


class _RowStopper(StoppingCriteria):
    """Feeds each step's new tokens to the rows and tells ``generate`` which rows are done."""

    def __init__(self, rows: list[_Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last, strict=True):
            if not row.done:
                row.add(token)
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)


class Engine:
    """Owns the model; one worker thread runs batched ``generate`` calls."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 8, max_queue: int = 64,
                 batch_wait_ms: float = 50.0, batch_quiet_ms: float = 5.0,
                 on_batch: Callable[[int], None] | None = None):
        self.model = model
        self.on_batch = on_batch  # e.g. a Prometheus histogram of batch sizes
        self.tok = tokenizer
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.batch_quiet_s = min(batch_quiet_ms, batch_wait_ms) / 1000.0
        self._last_arrival = 0.0
        self._arriving = 0
        gen = model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_ids: list[int] = [eos] if isinstance(eos, int) else list(eos or [])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else gen.pad_token_id
        self.pad_id: int = pad if pad is not None else self.eos_ids[0]
        self._pending: collections.deque[GenRequest] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches_run = 0
        self.largest_batch = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="charops-generate", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, fail what is still queued, and wait for the running batch."""
        with self._cond:
            self._stopping = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for req in waiting:
            req.error = "server is shutting down"
            req._emit(("error", req.error))
        if self._thread is not None:
            self._thread.join(timeout)

    # -- requests ---------------------------------------------------------------------------
    def submit(self, req: GenRequest) -> None:
        with self._cond:
            if self._stopping:
                raise EngineStopped("server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting (the queue holds {self.max_queue})")
            self._pending.append(req)
            self._last_arrival = time.monotonic()
            self._cond.notify()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Wrap reading and tokenizing a request: a batch about to start waits for it."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1

    @property
    def queued(self) -> int:
        return len(self._pending)

    def _take_batch(self) -> list[GenRequest] | None:
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
        # Concurrent clients arrive a few milliseconds apart: waiting for company turns 8
        # single-row generate calls into one 8-row call. Wait while requests keep arriving
        # (each gap under batch_quiet), at most batch_wait: a lone request pays one quiet gap.
        # Requests the server has begun to read (``arriving``) are waited for too.
        deadline = time.monotonic() + self.batch_wait_s
        while len(self._pending) < self.max_batch_size:
            now = time.monotonic()
            quiet = self._last_arrival + self.batch_quiet_s - now
            if now >= deadline or (quiet <= 0 and self._arriving <= 0):
                break
            time.sleep(min(max(quiet, 0.0005), deadline - now))
        with self._cond:
            if not self._pending:
                return []
            key = self._pending[0].batch_key
            batch = [r for r in self._pending if r.batch_key == key and not r.cancelled][: self.max_batch_size]
            for r in [r for r in self._pending if r.cancelled]:
                self._pending.remove(r)
                r.finish_reason = "cancelled"
                r._emit(("done", "cancelled"))
            for r in batch:
                self._pending.remove(r)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    # -- generation -------------------------------------------------------------------------
    def _run(self, batch: list[GenRequest]) -> None:
        rows = [_Row(r, self.tok, set(self.eos_ids)) for r in batch]
        width = max(len(r.input_ids) for r in batch)
        # Left padding: every row's last prompt token sits in the last column, so the new
        # tokens line up; the attention mask hides the padding.
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r.input_ids)
            ids[i, width - n:] = torch.tensor(r.input_ids, dtype=torch.long)
            mask[i, width - n:] = 1
        first = batch[0]
        sampling: dict[str, Any] = {"do_sample": False}
        if first.temperature > 0:
            sampling = {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p, "top_k": 0}
            if first.seed is not None:
                torch.manual_seed(first.seed)
        try:
            with torch.inference_mode():
                self.model.generate(
                    input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                    max_new_tokens=max(r.max_new_tokens for r in batch),
                    min_new_tokens=first.min_new_tokens or None,
                    repetition_penalty=first.repetition_penalty, eos_token_id=self.eos_ids,
                    pad_token_id=self.pad_id, stopping_criteria=StoppingCriteriaList([_RowStopper(rows)]),
                    **sampling)
        except Exception as exc:  # one bad batch must not take the server down
            for row in rows:
                if not row.done:
                    row.done = True
                    row.req.error = f"generation failed: {type(exc).__name__}: {exc}"
                    row.req._emit(("error", row.req.error))
            return
        finally:
            self.batches_run += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            if self.on_batch is not None:
                self.on_batch(len(batch))
        for row in rows:  # generate hit its overall length limit before a row's own stop
            if not row.done:
                row._finish("length")
