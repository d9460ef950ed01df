"""OpenAI-compatible routes of the local server: ``/openai/v1/models``, ``chat/completions``,
``completions`` (non-streaming and SSE streaming), the checks of every request field and the
OpenAI-shaped errors (the API key, body size and read time of every request are checked first
by ``charops.serve.guard``).

KServe's own OpenAI classes import vLLM, so these routes are a plain FastAPI router added to
KServe's app (see ``charops.serve.server``). Every refusal is an OpenAI-style error body
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status; a failed generation is a
500 with the same shape; nothing a client sends can stop the server::

    curl -s http://127.0.0.1:8080/openai/v1/chat/completions -H 'content-type: application/json' \\
      -d '{"model": "charops-chat:林小满", "messages": [{"role": "user", "content": "你好"}]}'
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from charops.serve.characters import Character
from charops.serve.engine import (
    SEED_MAX,
    SEED_MIN,
    Engine,
    EngineStopped,
    GenRequest,
    InvalidRequest,
    QueueFull,
)
from charops.serve.structured import RequestError, Structured

MAX_N = 8  # candidates per request (SillyTavern's multi-swipe asks for a few)


@dataclasses.dataclass
class Limits:
    """What a request may ask for, and what it gets when it does not say."""

    max_tokens_cap: int = 1024
    default_max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    max_body_bytes: int = 1 << 20


@dataclasses.dataclass
class ServingState:
    name: str
    engine: Engine
    tokenizer: Any
    characters: dict[str, Character]
    max_context: int
    limits: Limits = dataclasses.field(default_factory=Limits)
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))
    # The character-prompt policy when a request names none (charops.serve.prompting), and
    # whether characters training never covered may be asked for without allow_untrained.
    character_prompt: str = "merge"
    allow_untrained: bool = False
    structured: Structured | None = None  # grammar compiler, made on the first response_format


class APIError(Exception):
    """A refusal with an HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# -- request parsing --------------------------------------------------------------------------

# Sampling divides the logits by the temperature and by (or multiplies them with) the
# repetition penalty: below these, float32 logits overflow to inf and sampling fails.
MIN_TEMPERATURE = 0.01
MIN_PENALTY = 0.01
# What torch.manual_seed takes (a 64-bit integer, signed or not); outside it raises.
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)


def _number(body: dict, key: str, default: float, lo: float, hi: float, *, lo_open: bool = False,
            zero: bool = False) -> float:
    """A float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), or exactly 0 with ``zero``: NaN,
    infinities and values so small that dividing logits by them overflows are refused."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise APIError(400, f"'{key}' must be a number", param=key)
    if zero and value == 0:
        return 0.0
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise APIError(400, f"'{key}' is {value}; it must be {'0 or ' if zero else ''}in {bound}", param=key)
    return float(value)


def _integer(body: dict, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(400, f"'{key}' must be an integer", param=key)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise APIError(400, f"'{key}' is {value}; it must be from {lo} to {hi}", param=key)
    return value


def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > 4 or not all(isinstance(s, str) and s for s in value):
        raise APIError(400, "'stop' must be a non-empty string or a list of up to 4 of them", param="stop")
    return tuple(value)


def resolve_character(state: ServingState, body: dict) -> Character | None:
    """The character a request names (``model: NAME:CHARACTER`` or ``character``), or None."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required: a model id from /openai/v1/models", param="model")
    from_model = None
    if model != state.name:
        base, sep, char = model.partition(":")
        if base != state.name or not sep or not char:
            raise APIError(404, f"the model '{model}' does not exist; this server serves '{state.name}' "
                           f"and '{state.name}:CHARACTER' (see /openai/v1/models)",
                           param="model", code="model_not_found")
        from_model = char
    extra = body.get("character")
    if extra is not None and not isinstance(extra, str):
        raise APIError(400, "'character' must be a string", param="character")
    if extra and from_model and extra != from_model:
        raise APIError(400, f"'model' names character '{from_model}' but 'character' names '{extra}'",
                       param="character")
    name = extra or from_model
    if not name:
        return None
    if name not in state.characters:
        known = ", ".join(sorted(state.characters)) or "none"
        raise APIError(404, f"unknown character '{name}' (this model plays: {known})",
                       param="model" if from_model else "character", code="character_not_found")
    return state.characters[name]


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"messages[{i}].content: only text parts are supported",
                               param=f"messages[{i}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(400, f"messages[{i}].content must be a string or a list of text parts",
                   param=f"messages[{i}].content")


def chat_messages(body: dict, character: Character | None) -> list[dict]:
    """The request's checked messages; with ``character``, its profile as system prompt unless
    the request brings its own (the ``client`` policy). The chat route passes no character and
    lets :func:`chat_prompt` apply the request's profile policy (charops.serve.prompting)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' is required: a non-empty list of {role, content}", param="messages")
    out: list[dict] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = m.get("role")
        if role == "developer":  # the newer OpenAI name of the system role
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise APIError(400, f"messages[{i}].role '{role}' is not system, user or assistant",
                           param=f"messages[{i}].role")
        msg = {"role": role, "content": _content(m, i)}
        if role == "user" and isinstance(m.get("name"), str) and m["name"]:
            msg["name"] = m["name"]
        out.append(msg)
    if character is not None and not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": character.system_prompt})
    return out


def chat_prompt_ids(state: ServingState, messages: list[dict]) -> list[int]:
    text = state.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return state.tokenizer(text, add_special_tokens=False)["input_ids"]


def gen_request(state: ServingState, body: dict, prompt_ids: list[int]) -> GenRequest:
    """Sampling settings from the body (OpenAI names, ``presence_penalty`` and
    ``frequency_penalty`` included, plus vLLM's ``min_tokens`` and ``repetition_penalty``), checked against the server's limits and the context window."""
    lim = state.limits
    if body.get("tools") or body.get("functions"):
        raise APIError(400, "tools and functions are not supported by this server", param="tools")
    max_tokens = _integer(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens")
    param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if max_tokens is not None and not 1 <= max_tokens <= lim.max_tokens_cap:
        raise APIError(400, f"'{param}' is {max_tokens}; this server allows 1 to {lim.max_tokens_cap}",
                       param=param)
    room = state.max_context - len(prompt_ids)
    if room < 1 or (max_tokens is not None and max_tokens > room):
        raise APIError(400, f"the prompt is {len(prompt_ids)} tokens; with {max_tokens or 1} new tokens "
                       f"it exceeds the model's {state.max_context}-token context",
                       param="messages", code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = min(lim.default_max_tokens, room)
    min_tokens = _integer(body, "min_tokens") or 0
    if not 0 <= min_tokens <= max_tokens:
        raise APIError(400, f"'min_tokens' is {min_tokens}; it must be between 0 and the max tokens "
                       f"({max_tokens})", param="min_tokens")
    return GenRequest(
        input_ids=prompt_ids, max_new_tokens=max_tokens, min_new_tokens=min_tokens,
        temperature=_number(body, "temperature", lim.temperature, MIN_TEMPERATURE, 2.0, zero=True),
        top_p=_number(body, "top_p", lim.top_p, 0.0, 1.0, lo_open=True),
        repetition_penalty=_number(body, "repetition_penalty", lim.repetition_penalty, MIN_PENALTY, 10.0),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        stop=_stop(body), seed=_integer(body, "seed", *SEED_RANGE))


def _lone_surrogate(body: Any) -> str | None:
    """The path of the first string (key or value) holding half a UTF-16 surrogate pair, which
    JSON's ``\\ud800`` escapes can produce but no tokenizer or UTF-8 encoder takes."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or "body"
        elif isinstance(value, dict):
            for k, v in value.items():
                stack.append((f"{path}.{k}" if path else str(k), v))
                stack.append((path or "body", k))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return None


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400 naming what is wrong with it."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    where = _lone_surrogate(body)
    if where is not None:
        raise APIError(400, f"'{where}' holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
                       "escape); send valid Unicode", param=where)
    return body


async def read_json(request: Request) -> dict:
    return parse_json(await request.body())


# -- running a request ------------------------------------------------------------------------

def submit(state: ServingState, *reqs: GenRequest) -> asyncio.Queue | list[asyncio.Queue]:
    """Queue the requests all or none (the ``n`` candidates of one request join the batch
    together); their event queues (one queue when one request is given)."""
    loop = asyncio.get_running_loop()
    queues = [r.attach_async(loop) for r in reqs]
    try:
        state.engine.submit_all(reqs)
    except QueueFull as exc:
        raise APIError(429, f"the server is busy: {exc}; retry shortly", type="rate_limit_error",
                       code="rate_limit_exceeded", headers={"Retry-After": "1"}) from None
    except EngineStopped as exc:
        raise APIError(503, str(exc), type="server_error", code="shutting_down") from None
    except InvalidRequest as exc:
        raise APIError(400, str(exc)) from None
    return queues[0] if len(reqs) == 1 else queues


DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there


def engine_error(req: GenRequest, message: str) -> APIError:
    """The API error for an engine ``("error", message)`` event: 503 when the engine is
    shutting down (or its worker is gone), else 500."""
    if isinstance(req.error, EngineStopped):
        return APIError(503, message, type="server_error", code="shutting_down")
    return APIError(500, message, type="server_error")


async def run_to_end(req: GenRequest, events: asyncio.Queue, request: Request | None = None) -> str:
    """Wait for the whole reply of a submitted request; the finish reason is left on ``req``.

    With ``request``, a client that disconnects cancels the request: the engine stops its
    row at the next decoding step (streaming requests stop when their generator is closed)."""
    loop = asyncio.get_running_loop()
    check_at = loop.time() + DISCONNECT_POLL_S
    getter = asyncio.ensure_future(events.get())
    try:
        while True:
            timeout = None if request is None else max(0.0, check_at - loop.time())
            done, _ = await asyncio.wait({getter}, timeout=timeout)
            if request is not None and loop.time() >= check_at:
                check_at = loop.time() + DISCONNECT_POLL_S
                if not req.cancelled and await request.is_disconnected():
                    req.cancel()
            if not done:
                continue
            kind, value = getter.result()
            if kind == "error":
                raise engine_error(req, value)
            if kind == "done":
                return req.text
            getter = asyncio.ensure_future(events.get())
    finally:
        getter.cancel()
        req.cancel()  # a client that went away frees its batch row


def _usage(req: GenRequest) -> dict:
    n = len(req.input_ids)
    return {"prompt_tokens": n, "completion_tokens": req.completion_tokens,
            "total_tokens": n + req.completion_tokens}


def _finish(req: GenRequest) -> str:
    return "length" if req.finish_reason == "length" else "stop"


def _sse(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def candidate_events(reqs: list[GenRequest], queues: list[asyncio.Queue]) -> AsyncIterator[tuple[int, str, Any]]:
    """The events of submitted candidates as they come, ``(candidate index, kind, value)``, until
    every candidate has ended (``done`` or ``error``). Closing the generator early (the client
    went away, or the caller stops at an error) cancels the requests: their batch rows are freed."""
    merged: asyncio.Queue = asyncio.Queue()

    async def forward(i: int, q: asyncio.Queue) -> None:
        while True:
            kind, value = await q.get()
            await merged.put((i, kind, value))
            if kind in ("done", "error"):
                return

    tasks = [asyncio.create_task(forward(i, q)) for i, q in enumerate(queues)]
    try:
        left = len(reqs)
        while left:
            i, kind, value = await merged.get()
            if kind != "text":
                left -= 1
            yield i, kind, value
    finally:
        for t in tasks:
            t.cancel()
        for r in reqs:
            r.cancel()


def event_stream(frames: AsyncIterator[dict | str], headers: dict[str, str] | None = None) -> StreamingResponse:
    """A ``text/event-stream`` answer of ``frames`` (JSON objects, or literal strings such as
    ``[DONE]``), each sent as one ``data:`` event; the OpenAI routes' and the playground's."""

    async def body() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(frames):
            async for frame in frames:
                yield _sse(frame)

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", **(headers or {})})


@contextlib.asynccontextmanager
async def _announce_and_read(state: ServingState, request: Request) -> AsyncIterator[dict]:
    """The request's JSON body; the engine counts the request as on its way (a starting batch
    waits for it) until the block has tokenized and submitted it."""
    with state.engine.arriving():
        # Let the other requests that came in together announce themselves before
        # this one is tokenized and submitted: a starting batch then waits for them.
        await asyncio.sleep(0)
        yield await read_json(request)


def _stream_options(body: dict) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


@dataclasses.dataclass(frozen=True)
class Route:
    """What differs between ``chat/completions`` and ``completions``: how a body becomes prompt
    token ids, and the shape of a choice (whole, streamed, and the opening chunk if any)."""

    object: str
    chunk_object: str
    id_prefix: str
    prompt: Callable[[ServingState, dict], Prompt]
    choice: Callable[[str, str], dict]
    delta: Callable[[str | None, str | None], dict]
    opening: dict | None = None


@dataclasses.dataclass
class Prompt:
    """What a route makes of a request body: the prompt ids, headers for the response, and a
    factory of per-reply logits processors (grammar, logit bias; one per candidate)."""

    ids: list[int]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    processor: Callable[[], Any] = lambda: None
    messages: list[dict] = dataclasses.field(default_factory=list)  # chat: exactly what was rendered
    character: Character | None = None
    policy: str | None = None  # chat: the character-prompt policy that applied


def check_trained(state: ServingState, body: dict, character: Character | None) -> None:
    """Refuse a character training never covered unless the server or the request allows it."""
    allow = body.get("allow_untrained")
    if allow is not None and not isinstance(allow, bool):
        raise APIError(400, "'allow_untrained' must be true or false", param="allow_untrained")
    if character is None or character.trained or state.allow_untrained or allow:
        return
    raise APIError(400, f"character '{character.name}' is untrained: training rejected all of its "
                   "data, so the model never learned it. Send \"allow_untrained\": true to talk to it "
                   "anyway, or start the server with --allow-untrained-characters",
                   param="model", code="character_untrained")


def _processors(state: ServingState, body: dict, prompt_len: int) -> Callable[[], Any]:
    """A factory of per-reply logits processors for ``response_format`` and ``logit_bias``."""
    from charops.serve.structured import parse_logit_bias

    vocab = state.engine.vocab_size
    bias = parse_logit_bias(body, vocab)
    if body.get("response_format") is None and bias is None:
        return lambda: None
    if state.structured is None:
        state.structured = Structured(state.tokenizer, state.engine.eos_ids)
    grammar = state.structured.grammar_for(body)
    return lambda: state.structured.processor(grammar, bias, prompt_len)


def chat_prompt(state: ServingState, body: dict) -> Prompt:
    """A chat request's prompt: its character (checked as trained), the profile policy, persona,
    lorebook and continue (charops.serve.prompting), and its logits processors."""
    from charops.serve.prompting import build_chat, policy_of

    character = resolve_character(state, body)
    check_trained(state, body, character)
    messages = chat_messages(body, None)
    try:
        chat = build_chat(messages, character, state.tokenizer, body=body,
                          policy=policy_of(body, state.character_prompt))
        processor = _processors(state, body, len(chat.prompt_ids))
    except RequestError as exc:
        raise APIError(400, str(exc), param=exc.param, code=exc.code) from None
    return Prompt(chat.prompt_ids, {"x-charops-character-prompt": chat.policy}, processor,
                  messages=chat.messages, character=character, policy=chat.policy)


def _completion_prompt(state: ServingState, body: dict) -> Prompt:
    if resolve_character(state, body) is not None:
        raise APIError(400, "completions continue raw text and take no character; use "
                       "/openai/v1/chat/completions to talk to one", param="model")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise APIError(400, "'prompt' is required: a non-empty string", param="prompt")
    if body.get("echo"):
        raise APIError(400, "'echo' is not supported by this server", param="echo")
    ids = state.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    try:
        processor = _processors(state, body, len(ids))
    except RequestError as exc:
        raise APIError(400, str(exc), param=exc.param, code=exc.code) from None
    return Prompt(ids, processor=processor)


CHAT = Route(
    object="chat.completion", chunk_object="chat.completion.chunk", id_prefix="chatcmpl",
    prompt=chat_prompt,
    choice=lambda text, finish: {"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": None, "finish_reason": finish},
    delta=lambda text, finish: {"index": 0, "delta": {"content": text} if text is not None else {},
                                "logprobs": None, "finish_reason": finish},
    opening={"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
             "finish_reason": None})

COMPLETION = Route(
    object="text_completion", chunk_object="text_completion", id_prefix="cmpl",
    prompt=_completion_prompt,
    choice=lambda text, finish: {"index": 0, "text": text, "logprobs": None, "finish_reason": finish},
    delta=lambda text, finish: {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish})


def _event_stream(reqs: list[GenRequest], queues: list[asyncio.Queue], body: dict, head: dict, route: Route,
                  headers: dict[str, str]) -> StreamingResponse:
    """The streamed answer: each chunk is ``head`` (id, object, created, model) plus one
    choice (its ``index`` says which candidate); the route's opening chunk per candidate first,
    the usage of all candidates last when asked for."""

    async def frames() -> AsyncIterator[dict | str]:
        if route.opening is not None:
            for i in range(len(reqs)):
                yield {**head, "choices": [{**route.opening, "index": i}]}
        async with contextlib.aclosing(candidate_events(reqs, queues)) as events:
            async for i, kind, value in events:
                if kind == "text":
                    yield {**head, "choices": [{**route.delta(value, None), "index": i}]}
                elif kind == "error":
                    yield engine_error(reqs[i], value).body()
                    break  # closing the events cancels the other candidates
                else:
                    yield {**head, "choices": [{**route.delta(None, _finish(reqs[i])), "index": i}]}
            else:
                if _stream_options(body):
                    yield {**head, "choices": [], "usage": _usage_all(reqs)}
        yield "[DONE]"

    return event_stream(frames(), headers)


def _usage_all(reqs: list[GenRequest]) -> dict:
    """One prompt (shared by the candidates) and every candidate's completion tokens."""
    n, done = len(reqs[0].input_ids), sum(r.completion_tokens for r in reqs)
    return {"prompt_tokens": n, "completion_tokens": done, "total_tokens": n + done}


async def complete(state: ServingState, request: Request, route: Route):
    """One request of either route: parse, submit its ``n`` candidates (one batch: same
    settings, submitted together), then stream or wait for the whole replies."""
    reqs: list[GenRequest] = []
    try:
        async with _announce_and_read(state, request) as body:
            n = _integer(body, "n")
            n = 1 if n is None else n
            if not 1 <= n <= MAX_N:
                raise APIError(400, f"'n' is {n}; this server generates 1 to {MAX_N} candidates", param="n")
            # Rendering and tokenizing a 1 MiB body takes seconds: off the event loop, so the
            # probes and the other requests are answered meanwhile.
            prompt = await asyncio.to_thread(route.prompt, state, body)
            base = gen_request(state, body, prompt.ids)
            for i in range(n):
                # Each candidate samples with its own generator: seed, seed + 1, ...
                seed = None if base.seed is None else (base.seed - SEED_MIN + i) % (SEED_MAX - SEED_MIN + 1) + SEED_MIN
                reqs.append(dataclasses.replace(base, seed=seed, logits_processor=prompt.processor()))
            queues = submit(state, *reqs)
            queues = queues if isinstance(queues, list) else [queues]
        head = {"id": f"{route.id_prefix}-{uuid.uuid4().hex}", "object": route.object,
                "created": int(time.time()), "model": body["model"]}
        if body.get("stream"):
            return _event_stream(reqs, queues, body, {**head, "object": route.chunk_object}, route,
                                 prompt.headers)
        texts = await asyncio.gather(*(run_to_end(r, q, request) for r, q in zip(reqs, queues, strict=True)))
    except APIError as exc:
        for r in reqs:
            r.cancelled = True
        return exc.response()
    choices = [{**route.choice(t, _finish(r)), "index": i} for i, (t, r) in enumerate(zip(texts, reqs, strict=True))]
    return JSONResponse({**head, "choices": choices, "usage": _usage_all(reqs)}, headers=prompt.headers)


# -- routes -----------------------------------------------------------------------------------

def openai_router(state: ServingState) -> APIRouter:
    router = APIRouter(prefix="/openai/v1")

    def model_card(model_id: str, character: Character | None = None) -> dict:
        card = {"id": model_id, "object": "model", "created": state.created, "owned_by": "charops"}
        if character is not None:
            p = character.profile
            card["character"] = {"name": p.name, "category": p.category, "language": p.language,
                                 "greeting": p.greeting, "alternate_greetings": list(p.alternate_greetings),
                                 "trained": character.trained}
        return card

    @router.get("/models")
    async def list_models() -> JSONResponse:
        data = [model_card(state.name)]
        data += [model_card(f"{state.name}:{c.name}", c) for c in state.characters.values()]
        return JSONResponse({"object": "list", "data": data})

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> JSONResponse:
        try:
            character = resolve_character(state, {"model": model_id})
        except APIError as exc:
            return exc.response()
        return JSONResponse(model_card(model_id, character))

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        return await complete(state, request, CHAT)

    @router.post("/completions")
    async def completions(request: Request):
        return await complete(state, request, COMPLETION)

    return router
