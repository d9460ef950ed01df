"""Feedback events: one user action in the playground (or an imported chat), checked.

An event is a JSON object (schema ``charops.feedback_event/v1``)::

    {"id": "c0ffee...",                  # made by the client: sending it twice is harmless
     "at": "2026-12-04T21:00:00.000Z",    # when the user acted (client clock, ISO 8601)
     "source": "playground",             # playground | sillytavern | open-webui
     "model": {"name": "charops-chat", "version": 3, "sha256": "..."},
     "character": "林小满", "category": "daily-life", "topic": "chit-chat",
     "conversation": "conv-1", "turn": 2,
     "messages": [{"role": "system", ...}, {"role": "user", ...}],  # exactly what the model saw
     "candidates": [{"text": "...", "position": 0, "sampling": {"temperature": 0.7, ...},
                     "model": {...}}],   # a candidate's own model in the arena
     "action": {"kind": "choose", "candidate": 1, "continued": true}}

Actions (``action.kind``):

- ``choose``: the candidate the user kept (``candidate``), ``continued`` when they went on
  chatting from it (a swipe that stuck);
- ``edit``: the user rewrote candidate ``candidate`` into ``text``;
- ``thumbs``: ``up`` true/false on ``candidate``, optional ``reason``;
- ``stars``: ``stars`` 1-4 on ``candidate``;
- ``vote``: an arena verdict, ``winner`` ``a`` | ``b`` | ``tie`` | ``both_bad``, ``a`` being the
  candidate shown at position 0 (left). ``anonymous`` false marks a vote the server discarded
  because a reply named its model.

:func:`check_event` returns the normalised event or raises :class:`EventError` naming the
field; the server answers it with a 4xx.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any

from charops.errors import CharopsError

SCHEMA = "charops.feedback_event/v1"
SOURCES = ("playground", "sillytavern", "open-webui")
ACTIONS = ("choose", "edit", "thumbs", "stars", "vote")
WINNERS = ("a", "b", "tie", "both_bad")
# Size limits: an event is one turn of one conversation, not a transcript dump.
MAX_EVENT_BYTES = 256 * 1024
MAX_MESSAGES = 200
MAX_CANDIDATES = 16
MAX_TEXT_CHARS = 32_000
MAX_REASON_CHARS = 2_000
ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")
_SAMPLING_KEYS = {"temperature", "top_p", "max_tokens", "seed", "repetition_penalty", "n",
                  "min_tokens"}


class EventError(CharopsError):
    """An event that cannot be stored; ``field`` says where, ``status`` is the HTTP answer."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status


def _fail(field: str, what: str, status: int = 400) -> EventError:
    return EventError(f"event field '{field}': {what}", field, status)


def _str(obj: dict, key: str, *, required: bool = True, limit: int = 256,
         where: str | None = None) -> str | None:
    where = where or key
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _fail(where, "a non-empty string is required")
    if len(value) > limit:
        raise _fail(where, f"{len(value)} characters, over the limit of {limit}", 413)
    return value


def _int(obj: dict, key: str, lo: int, hi: int, *, where: str | None = None,
         required: bool = True) -> int | None:
    where = where or key
    value = obj.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(where, f"an integer from {lo} to {hi} is required")
    return value


def parse_time(value: Any, where: str = "at") -> _dt.datetime:
    """An ISO 8601 time with a zone (``Z`` accepted), as an aware datetime."""
    if not isinstance(value, str):
        raise _fail(where, "an ISO 8601 time such as 2026-12-04T21:00:00Z is required")
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(where, f"'{value[:40]}' is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise _fail(where, "the time needs a zone (end it with Z for UTC)")
    return t.astimezone(_dt.UTC)


def iso(t: _dt.datetime) -> str:
    return t.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(_dt.datetime.now(_dt.UTC))


def _model(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, "an object {name, version, sha256} is required")
    name = _str(value, "name", where=f"{where}.name")
    version = value.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise _fail(f"{where}.version", "a registry version (an integer from 1) or null")
    sha = value.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise _fail(f"{where}.sha256", "64 lowercase hex digits or null")
    out = {"name": name, "version": version, "sha256": sha}
    if value.get("label") is not None:
        out["label"] = _str(value, "label", where=f"{where}.label")
    return out


def _messages(value: Any) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _fail("messages", "the non-empty list of messages the model was given")
    if len(value) > MAX_MESSAGES:
        raise _fail("messages", f"{len(value)} messages, over the limit of {MAX_MESSAGES}", 413)
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise _fail(f"{where}.role", "system, user or assistant")
        content = m.get("content")
        if not isinstance(content, str):
            raise _fail(f"{where}.content", "a string is required")
        if len(content) > MAX_TEXT_CHARS:
            raise _fail(f"{where}.content", f"over {MAX_TEXT_CHARS} characters", 413)
        out.append({"role": m["role"], "content": content})
    if out[-1]["role"] != "user":
        raise _fail("messages", "the last message must be the user turn the candidates answer")
    return out


def _candidates(value: Any) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _fail("candidates", "the non-empty list of replies shown to the user")
    if len(value) > MAX_CANDIDATES:
        raise _fail("candidates", f"{len(value)} candidates, over the limit of {MAX_CANDIDATES}", 413)
    out, positions = [], set()
    for i, c in enumerate(value):
        where = f"candidates[{i}]"
        if not isinstance(c, dict):
            raise _fail(where, "an object {text, position, sampling} is required")
        text = c.get("text")
        if not isinstance(text, str):
            raise _fail(f"{where}.text", "a string is required")
        if len(text) > MAX_TEXT_CHARS:
            raise _fail(f"{where}.text", f"over {MAX_TEXT_CHARS} characters", 413)
        position = _int(c, "position", 0, MAX_CANDIDATES - 1, where=f"{where}.position")
        if position in positions:
            raise _fail(f"{where}.position", f"position {position} is used twice")
        positions.add(position)
        sampling = c.get("sampling", {})
        if not isinstance(sampling, dict) or not set(sampling) <= _SAMPLING_KEYS or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in sampling.values()):
            raise _fail(f"{where}.sampling", f"an object of numbers with keys among {sorted(_SAMPLING_KEYS)}")
        cand = {"text": text, "position": position, "sampling": dict(sampling)}
        if c.get("model") is not None:
            cand["model"] = _model(c["model"], f"{where}.model")
        out.append(cand)
    return out


def _action(value: Any, n_candidates: int) -> dict:
    if not isinstance(value, dict) or value.get("kind") not in ACTIONS:
        raise _fail("action.kind", f"one of {', '.join(ACTIONS)}")
    kind = value["kind"]
    if kind == "vote":
        if n_candidates != 2:
            raise _fail("candidates", "an arena vote compares exactly two candidates")
        if value.get("winner") not in WINNERS:
            raise _fail("action.winner", f"one of {', '.join(WINNERS)}")
        anonymous = value.get("anonymous", True)
        if not isinstance(anonymous, bool):
            raise _fail("action.anonymous", "true or false")
        return {"kind": kind, "winner": value["winner"], "anonymous": anonymous}
    out = {"kind": kind, "candidate": _int(value, "candidate", 0, n_candidates - 1,
                                           where="action.candidate")}
    if kind == "choose":
        continued = value.get("continued", False)
        if not isinstance(continued, bool):
            raise _fail("action.continued", "true or false")
        out["continued"] = continued
    elif kind == "edit":
        text = _str(value, "text", limit=MAX_TEXT_CHARS, where="action.text")
        out["text"] = text
    elif kind == "thumbs":
        if not isinstance(value.get("up"), bool):
            raise _fail("action.up", "true (thumbs up) or false (thumbs down)")
        out["up"] = value["up"]
        reason = _str(value, "reason", required=False, limit=MAX_REASON_CHARS, where="action.reason")
        if reason:
            out["reason"] = reason
    elif kind == "stars":
        out["stars"] = _int(value, "stars", 1, 4, where="action.stars")
    return out


def check_event(event: Any, *, raw_size: int | None = None) -> dict:
    """The event normalised (only known fields, schema set), or EventError naming the field."""
    if raw_size is None:
        raw_size = len(json.dumps(event, ensure_ascii=False).encode()) if isinstance(event, dict) else 0
    if raw_size > MAX_EVENT_BYTES:
        raise EventError(f"the event is {raw_size} bytes, over the limit of {MAX_EVENT_BYTES}",
                         None, 413)
    if not isinstance(event, dict):
        raise EventError("an event is a JSON object", None)
    if event.get("schema", SCHEMA) != SCHEMA:
        raise _fail("schema", f"'{event.get('schema')}' is not {SCHEMA}")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not ID_RE.match(event_id):
        raise _fail("id", "8 to 128 characters of A-Z a-z 0-9 _ . : - made by the client "
                    "(e.g. a UUID), the same on every retry")
    at = iso(parse_time(event.get("at")))
    source = event.get("source", "playground")
    if source not in SOURCES:
        raise _fail("source", f"one of {', '.join(SOURCES)}")
    candidates = _candidates(event.get("candidates"))
    out = {
        "schema": SCHEMA, "id": event_id, "at": at, "source": source,
        "model": _model(event.get("model"), "model"),
        "character": _str(event, "character", required=False),
        "category": _str(event, "category", required=False, limit=64),
        "topic": _str(event, "topic", required=False, limit=64),
        "conversation": _str(event, "conversation", limit=128),
        "turn": _int(event, "turn", 0, 100_000),
        "messages": _messages(event.get("messages")),
        "candidates": candidates,
        "action": _action(event.get("action"), len(candidates)),
    }
    if event.get("received_at") is not None:
        out["received_at"] = iso(parse_time(event["received_at"], "received_at"))
    return out


def same_event(a: dict, b: dict) -> bool:
    """Two copies of one event (a retry) rather than two events under one id."""
    strip = ("received_at",)
    return {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}
