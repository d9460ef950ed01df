"""Feedback people already have, as charops feedback events.

    charops feedback import chats/林小满/2026-12-01.jsonl --from sillytavern --model charops-chat
    charops feedback import feedback-export.json --from open-webui --model charops-chat

- **SillyTavern chat JSONL** (``data/<user>/chats/<character>/*.jsonl``): line 1 is a header
  (``user_name``, ``character_name``, ``create_date``, ``chat_metadata``), every further line a
  message (``name``, ``is_user``, ``is_system``, ``send_date``, ``mes``) whose character replies
  may carry ``swipes`` (every candidate generated for that turn) and ``swipe_id`` (the one shown,
  the one the chat went on from). A reply with two or more swipes becomes a ``choose`` event:
  the shown swipe, ``continued`` when the chat has a later user message. SillyTavern does not
  save the prompt it assembled (system prompt, card fields), so the event's messages are the
  chat's own turns, no system message.
- **Open WebUI's feedback export** (Admin > Evaluations > Export: a JSON array of
  ``{id, data: {rating: 1|-1, reason, comment, model_id, sibling_model_ids}, meta: {chat_id,
  message_id, arena}, snapshot: {chat: {chat: {history: {messages}}}}, created_at}``): a
  ``thumbs`` event on the rated reply, with the conversation up to it taken from the snapshot
  (parent links). Open WebUI's arena stores the winner's reply only, so an arena rating is a
  thumbs event too.

Each unit that does not become an event is counted with its reason (read = events + skipped).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from charops.errors import DataError
from charops.feedback.events import EventError, check_event, iso

SOURCES = ("sillytavern", "open-webui")


def _event_id(source: str, *parts: Any) -> str:
    """A stable id: importing the same file twice stores each event once."""
    return f"{source}-" + hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


def _st_time(value: Any, fallback: str) -> str:
    """SillyTavern's send_date: epoch milliseconds, or text like 'December 4, 2026 9:00pm'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return iso(_dt.datetime.fromtimestamp(value / 1000, _dt.UTC))
    if isinstance(value, str):
        for fmt in ("%B %d, %Y %I:%M%p", "%B %d, %Y %I:%M %p", "%Y-%m-%dT%H:%M:%S.%fZ",
                    "%Y-%m-%d@%Hh%Mm%Ss"):
            try:
                return iso(_dt.datetime.strptime(value.strip(), fmt).replace(tzinfo=_dt.UTC))
            except ValueError:
                continue
    return fallback


def _model(name: str, version: int | None = None, sha256: str | None = None) -> dict:
    return {"name": name, "version": version, "sha256": sha256}


def sillytavern_events(path: str | Path, model: str, *, version: int | None = None,
                       sha256: str | None = None) -> tuple[list[dict], Counter]:
    """(events, skipped reasons) of one SillyTavern chat file (read by the ``sillytavern-chat``
    data importer's :func:`~charops.data.importers.sillytavern.read_chat`)."""
    from charops.data.importers.sillytavern import ChatError, read_chat

    path = Path(path)
    try:
        chat = read_chat(path)
    except ChatError as exc:
        raise DataError(f"{path}: {exc}; pass a SillyTavern chat file "
                        "(data/<user>/chats/<character>/*.jsonl)") from None
    created = _st_time(chat.header.get("create_date"),
                       iso(_dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.UTC)))
    conversation = f"st:{path.parent.name}/{path.stem}"
    skipped: Counter = Counter()
    events: list[dict] = []
    history: list[dict] = []
    for i, m in enumerate(chat.messages):
        if m.role == "system":
            skipped["system/narrator message"] += 1
            continue
        if m.role == "user":
            history.append({"role": "user", "content": m.content})
            continue
        if len(m.swipes) >= 2 and history and history[-1]["role"] == "user":
            continued = any(later.role == "user" for later in chat.messages[i + 1:])
            event = {
                "id": _event_id("sillytavern", conversation, m.line, m.swipes, m.swipe_id),
                "at": _st_time(m.raw.get("send_date"), created), "source": "sillytavern",
                "model": _model(model, version, sha256), "character": chat.character,
                "conversation": conversation, "turn": sum(1 for h in history if h["role"] == "user") - 1,
                "messages": list(history),
                "candidates": [{"text": s, "position": k, "sampling": {}} for k, s in enumerate(m.swipes)],
                "action": {"kind": "choose", "candidate": m.swipe_id, "continued": continued},
            }
            try:
                events.append(check_event(event))
            except EventError as exc:
                skipped[f"not a valid event ({exc.field})"] += 1
        elif not history or history[-1]["role"] != "user":
            skipped["reply without a user turn before it (greeting)"] += 1
        else:
            skipped["reply with one swipe (no choice made)"] += 1
        history.append({"role": "assistant", "content": m.content})
    return events, skipped


def _owui_thread(messages: dict, message_id: str) -> list[dict] | None:
    """The messages from the root down to ``message_id`` (parentId links), oldest first."""
    chain, seen = [], set()
    current = messages.get(message_id)
    while current is not None:
        if current.get("id") in seen:
            return None
        seen.add(current.get("id"))
        chain.append(current)
        parent = current.get("parentId")
        current = messages.get(parent) if parent else None
    return list(reversed(chain))


def open_webui_events(path: str | Path, model: str, *, version: int | None = None,
                      sha256: str | None = None) -> tuple[list[dict], Counter]:
    """(events, skipped reasons) of an Open WebUI feedback export (a JSON array)."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a JSON file ({exc}); export it from Open WebUI's "
                        "Admin > Evaluations > Feedbacks") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON array of feedback records (Open WebUI's export)")
    events, skipped = [], Counter()
    for k, rec in enumerate(records):
        data = rec.get("data") if isinstance(rec, dict) else None
        meta = rec.get("meta") if isinstance(rec, dict) else None
        if not isinstance(data, dict) or not isinstance(meta, dict) or data.get("rating") not in (1, -1):
            skipped["not a rating record (data.rating 1 or -1)"] += 1
            continue
        try:
            history = rec["snapshot"]["chat"]["chat"]["history"]["messages"]
        except (KeyError, TypeError):
            skipped["no conversation snapshot"] += 1
            continue
        thread = _owui_thread(history, meta.get("message_id", "")) if isinstance(history, dict) else None
        if not thread or thread[-1].get("role") != "assistant" or len(thread) < 2:
            skipped["rated message not found in the snapshot"] += 1
            continue
        turns = [{"role": t.get("role"), "content": t.get("content")} for t in thread]
        reason = " ".join(str(x) for x in (data.get("reason"), data.get("comment")) if x)
        created = rec.get("created_at")
        at = iso(_dt.datetime.fromtimestamp(created, _dt.UTC)) if isinstance(created, (int, float)) \
            else iso(_dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.UTC))
        action = {"kind": "thumbs", "candidate": 0, "up": data["rating"] == 1}
        if reason:
            action["reason"] = reason[:2000]
        event = {
            "id": _event_id("open-webui", rec.get("id", k)), "at": at, "source": "open-webui",
            "model": _model(model, version, sha256), "character": None,
            "topic": None, "conversation": f"owui:{meta.get('chat_id') or rec.get('id', k)}",
            "turn": sum(1 for t in turns[:-1] if t["role"] == "user") - 1,
            "messages": turns[:-1],
            "candidates": [{"text": turns[-1]["content"], "position": 0, "sampling": {}}],
            "action": action,
        }
        try:
            events.append(check_event(event))
        except EventError as exc:
            skipped[f"not a valid event ({exc.field})"] += 1
    return events, skipped


def import_events(paths: list[str | Path], source: str, model: str, **kwargs: Any,
                  ) -> tuple[list[dict], dict]:
    """Events of every file, and ``{file: {"read", "events", "skipped": {reason: n}}}``."""
    if source not in SOURCES:
        raise DataError(f"--from '{source}': use {' or '.join(SOURCES)}")
    reader = sillytavern_events if source == "sillytavern" else open_webui_events
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*.json*") if q.is_file() and not q.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    out, report = [], {}
    for f in files:
        events, skipped = reader(f, model, **kwargs)
        out += events
        report[str(f)] = {"read": len(events) + sum(skipped.values()), "events": len(events),
                          "skipped": dict(sorted(skipped.items()))}
    return out, report
