"""Client for an OpenAI-compatible chat endpoint used as a judge, with retries, pacing and a cache.

    from charops.eval.llm import Endpoint, JudgeCache, ask_all
    endpoint = Endpoint.from_env(model="gpt-4o-mini")     # CHAROPS_JUDGE_BASE_URL / _API_KEY
    answers = ask_all([(key, prompt, parse), ...], endpoint, JudgeCache("runs/eval/judge_cache.jsonl"))

``parse`` turns an answer text into a value or raises ``AnswerError``. An item may carry a
fourth element, the JSON schema its answer follows: it is sent as ``response_format``
(``json_schema``, strict) so a server with structured output (OpenAI, vLLM, ``charops deploy
--local``) can only answer in that shape. An endpoint that refuses ``response_format`` (HTTP 400
naming it) is asked again without it, and for the rest of the run (``response_format="auto"``,
the default; ``"off"`` never sends it).

Every request is ``POST {base_url}/chat/completions`` with temperature 0. A request is retried
(at most ``max_retries`` more times, exponential backoff, ``Retry-After`` honoured up to
``max_backoff_s``) on a timeout, a connection error, HTTP 429 or 5xx, a response body that is
not a chat completion, and an answer ``parse`` rejects (``AnswerError``); after that the item
is *unjudged*: it carries an error and no value, and it is never given a score. HTTP 401/403/404
stop the whole run with a one-line error (a wrong key, model or URL fails every item alike).
Each attempt is bounded by ``timeout_s`` in total, so a server that hangs costs seconds.

At most ``concurrency`` requests are in flight and, with ``rate_limit`` > 0, at most that many
start per second. Raw answers are kept (every attempt's), token counts summed from ``usage``.
The cache (JSONL, one line per answered item, appended as answers arrive) is keyed by the
caller: the judges key it by (rubric name@version, judge model, prompt, reply), so a re-run or a
resumed run sends nothing for what was already answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from charops.errors import CharopsError, ConfigError
from charops.eval.rubric import AnswerError

ENV_BASE_URL = "CHAROPS_JUDGE_BASE_URL"
ENV_API_KEY = "CHAROPS_JUDGE_API_KEY"
ENV_MODEL = "CHAROPS_JUDGE_MODEL"
_FATAL = {401: "the endpoint refused the API key", 403: "the API key may not use this model",
          404: "no such model or URL"}


@dataclass
class Endpoint:
    """Where the judge is and how hard to push it."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 20.0
    concurrency: int = 8
    rate_limit: float = 0.0
    max_tokens: int = 512
    response_format: str = "auto"  # auto: send a json_schema when the item has one; off: never

    @classmethod
    def from_env(cls, base_url: str | None = None, model: str | None = None, **kwargs: Any) -> Endpoint:
        """Settings from arguments, else ``CHAROPS_JUDGE_BASE_URL`` / ``_MODEL`` / ``_API_KEY``
        (the variables the ``charops-judge`` Secret provides in a cluster)."""
        url = base_url or os.environ.get(ENV_BASE_URL)
        name = model or os.environ.get(ENV_MODEL)
        if not url:
            raise ConfigError(f"judge 'openai' needs an endpoint: set {ENV_BASE_URL} (e.g. "
                              "https://api.openai.com/v1) or judge_base_url=...")
        if not name:
            raise ConfigError(f"judge 'openai' needs a model: set judge_model=... or {ENV_MODEL}")
        return cls(base_url=url.rstrip("/"), model=name, api_key=os.environ.get(ENV_API_KEY), **kwargs)


@dataclass
class Answer:
    """One item's outcome: ``value`` (what ``parse`` returned) or ``error``; never both."""

    key: str
    value: Any = None
    text: str | None = None
    error: str | None = None
    raw: list[str] = field(default_factory=list)
    attempts: int = 0
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


def cache_key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


class JudgeCache:
    """Append-only JSONL of answered items: ``{"key", "text", "prompt_tokens", "completion_tokens"}``.

    Loaded once; a torn last line (a run killed mid-write) is ignored. Only parsed answers are
    stored, so a re-run retries what failed and re-uses what succeeded.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        if self.path and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "key" in entry and "text" in entry:
                    self.entries[entry["key"]] = entry

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        entry = {"key": key, "text": text, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        self.entries[key] = entry
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")


class _Pacer:
    """Spaces request starts at least 1/rate seconds apart (rate 0: no limit)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        loop = asyncio.get_running_loop()
        async with self.lock:
            now = loop.time()
            start = max(now, self.next)
            self.next = start + self.interval
        await asyncio.sleep(start - now)


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return float(resp.headers.get("retry-after", ""))
    except ValueError:
        return None


def response_format(schema: dict, name: str = "judge_answer") -> dict:
    """OpenAI's ``response_format`` for answers that follow ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


async def _ask(client: httpx.AsyncClient, ep: Endpoint, key: str, prompt: str,
               parse: Callable[[str], Any], sem: asyncio.Semaphore, pacer: _Pacer,
               schema: dict | None = None, flags: dict | None = None) -> Answer:
    ans = Answer(key=key)
    flags = flags if flags is not None else {}
    body = {"model": ep.model, "messages": [{"role": "user", "content": prompt}],
            "temperature": 0, "max_tokens": ep.max_tokens}
    headers = {"Authorization": f"Bearer {ep.api_key}"} if ep.api_key else {}
    delay = 0.0
    for attempt in range(ep.max_retries + 1):
        if attempt:
            await asyncio.sleep(delay + random.uniform(0, 0.1 * delay))
        delay = min(ep.max_backoff_s, ep.backoff_s * 2 ** attempt)
        await pacer.wait()
        ans.attempts += 1
        try:
            async with sem:
                # Decided once in flight: a refusal seen by another item meanwhile counts.
                structured = schema is not None and ep.response_format != "off" and not flags.get("no_response_format")
                if structured:
                    body["response_format"] = response_format(schema)
                else:
                    body.pop("response_format", None)
                resp = await asyncio.wait_for(
                    client.post(f"{ep.base_url}/chat/completions", json=body, headers=headers), ep.timeout_s)
        except (TimeoutError, httpx.TimeoutException):
            ans.error = f"timeout after {ep.timeout_s:g}s"
            continue
        except httpx.TransportError as exc:
            ans.error = f"connection error: {type(exc).__name__}: {exc}"
            continue
        if resp.status_code in _FATAL:
            raise CharopsError(f"judge endpoint {ep.base_url}: HTTP {resp.status_code} for model "
                               f"'{ep.model}' ({_FATAL[resp.status_code]}); check {ENV_BASE_URL}, "
                               f"{ENV_API_KEY} and judge_model")
        if resp.status_code == 429 or resp.status_code >= 500:
            ans.error = f"HTTP {resp.status_code}"
            wait = _retry_after(resp)
            if wait is not None:
                delay = min(ep.max_backoff_s, max(delay, wait))
            continue
        if resp.status_code == 400 and structured and "response_format" in resp.text:
            # The endpoint has no structured output: ask again (now, and from now on) without it.
            flags["no_response_format"] = True
            ans.error, delay = f"HTTP 400: {resp.text[:200]}", 0.0
            continue
        if resp.status_code >= 400:
            ans.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
            break  # the request itself is wrong; repeating it cannot help
        try:
            data = resp.json()
            text = data["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            ans.error = f"malformed response body ({type(exc).__name__}: {exc})"
            continue
        usage = data.get("usage") or {}
        ans.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        ans.completion_tokens += int(usage.get("completion_tokens") or 0)
        ans.raw.append(text)
        try:
            ans.value = parse(text)
        except AnswerError as exc:
            ans.error = f"unparseable answer: {exc}"
            delay = 0.0  # the endpoint is fine; ask again at once
            continue
        ans.text, ans.error = text, None
        return ans
    return ans


Item = tuple  # (cache key, prompt, parse) or (cache key, prompt, parse, JSON schema of the answer)


async def _ask_all(items: Sequence[Item], ep: Endpoint, cache: JudgeCache,
                   progress: Callable[[], None]) -> list[Answer]:
    results: list[Answer | None] = [None] * len(items)
    todo = []
    for i, (key, _, parse, *_) in enumerate(items):
        hit = cache.get(key)
        if hit is not None:
            try:
                value = parse(hit["text"])
            except AnswerError:
                hit = None
            else:
                results[i] = Answer(key=key, value=value, text=hit["text"], raw=[hit["text"]], cached=True,
                                    prompt_tokens=int(hit.get("prompt_tokens") or 0),
                                    completion_tokens=int(hit.get("completion_tokens") or 0))
                progress()
        if hit is None:
            todo.append(i)
    sem, pacer = asyncio.Semaphore(max(1, ep.concurrency)), _Pacer(ep.rate_limit)
    flags: dict = {}  # what the run learnt about the endpoint (no_response_format)
    limits = httpx.Limits(max_connections=max(1, ep.concurrency), max_keepalive_connections=max(1, ep.concurrency))
    timeout = httpx.Timeout(ep.timeout_s, connect=min(ep.timeout_s, 10.0))

    async def one(i: int, client: httpx.AsyncClient) -> None:
        key, prompt, parse, *rest = items[i]
        ans = await _ask(client, ep, key, prompt, parse, sem, pacer, rest[0] if rest else None, flags)
        if ans.error is None:
            cache.put(key, ans.text, ans.prompt_tokens, ans.completion_tokens)
        results[i] = ans
        progress()

    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        try:
            async with asyncio.TaskGroup() as tg:
                for i in todo:
                    tg.create_task(one(i, client))
        except* CharopsError as group:
            raise group.exceptions[0] from None
    return [r for r in results if r is not None]


def ask_all(items: Sequence[Item], endpoint: Endpoint, cache: JudgeCache | None = None,
            progress: bool = False, desc: str = "judging") -> list[Answer]:
    """Ask the endpoint every ``(cache key, prompt, parse)`` of ``items``; one :class:`Answer`
    each, in order."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="item", disable=not progress)
    try:
        return asyncio.run(_ask_all(items, endpoint, cache or JudgeCache(None), lambda: bar.update(1)))
    finally:
        bar.close()


def usage_of(answers: Sequence[Answer]) -> dict:
    """Token and request counts of a judging pass (cached answers cost no new tokens)."""
    fresh = [a for a in answers if not a.cached]
    return {"items": len(answers), "cached": len(answers) - len(fresh),
            "requests": sum(a.attempts for a in fresh),
            "unjudged": sum(1 for a in answers if a.error is not None),
            "prompt_tokens": sum(a.prompt_tokens for a in fresh),
            "completion_tokens": sum(a.completion_tokens for a in fresh),
            "cached_prompt_tokens": sum(a.prompt_tokens for a in answers if a.cached),
            "cached_completion_tokens": sum(a.completion_tokens for a in answers if a.cached)}
