"""Chat datasets in the two common shapes, one conversation per JSONL line (or a JSON array):

- OpenAI ``{"messages": [{"role": "system"|"user"|"assistant", "content": "...", "name"?}]}``
- ShareGPT ``{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}], "system"?}``

Each becomes a :class:`~charops.data.schema.Dialogue`. The character is the record's
``character`` (or ``name``) field, else the importer's ``character`` option (CLI
``--character``); with neither, the record is rejected. ``id`` and ``topic`` are kept; other
top-level fields go to ``meta``. Without an ``id`` a record gets ``<file stem>-<line>``::

    from pathlib import Path
    from charops.data.importers import messages
    parsed = messages.parse_messages(Path("chats.jsonl"), "chats.jsonl", character="林小满")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charops.data.importers.common import Parsed, Reject, build, json_objects
from charops.data.schema import Dialogue

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}
OPENAI_ROLES = ("system", "user", "assistant")
_OWN_KEYS = {"messages", "conversations", "character", "name", "id", "topic", "system", "source"}


def _content(value: Any) -> str | None:
    """Message content: a string, or OpenAI content parts whose text parts are joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    return None


def _openai_turns(items: list) -> list[dict] | str:
    turns = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            return f"messages[{i}]: not an object"
        if m.get("role") not in OPENAI_ROLES:
            return f"messages[{i}].role: expected system, user or assistant"
        content = _content(m.get("content"))
        if content is None:
            return f"messages[{i}].content: missing or not text"
        turn = {"role": m["role"], "content": content}
        if m.get("name"):
            turn["name"] = str(m["name"])
        turns.append(turn)
    return turns


def _sharegpt_turns(items: list) -> list[dict] | str:
    turns = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            return f"conversations[{i}]: not an object"
        role = SHAREGPT_ROLES.get(m.get("from"))
        if role is None:
            return f"conversations[{i}].from: expected human, gpt or system"
        if not isinstance(m.get("value"), str):
            return f"conversations[{i}].value: missing or not text"
        turns.append({"role": role, "content": m["value"]})
    return turns


def _parse(path: Path, display: str, character: str | None, key: str) -> Parsed:
    out = Parsed()
    for unit in json_objects(path, display, "dialogue", out):
        obj = unit.value
        if not isinstance(obj.get(key), list):
            out.rejects.append(Reject(display, unit.location, "dialogue", f"missing '{key}' list"))
            continue
        turns = _openai_turns(obj[key]) if key == "messages" else _sharegpt_turns(obj[key])
        if isinstance(turns, str):
            out.rejects.append(Reject(display, unit.location, "dialogue", turns))
            continue
        if isinstance(obj.get("system"), str) and obj["system"].strip():
            turns.insert(0, {"role": "system", "content": obj["system"]})
        who = obj.get("character") or obj.get("name") or character
        if not who:
            out.rejects.append(Reject(display, unit.location, "dialogue",
                                      "no character: add a 'character' field or pass --character NAME"))
            continue
        data = {
            "id": str(obj["id"]) if obj.get("id") not in (None, "") else f"{path.stem}-{unit.tag[1:]}",
            "character": who,  # a non-string is the schema's to reject, with its reason
            "turns": turns,
            "source": obj.get("source") or f"{display}{unit.tag}",
            "meta": {k: v for k, v in obj.items() if k not in _OWN_KEYS},
        }
        if "topic" in obj:
            data["topic"] = obj["topic"]
        # A top-level system prompt shifts turn numbers by one: then report them as turns[i].
        record = build(Dialogue, data, rename=None if "system" in obj else {"turns": key})
        if isinstance(record, str):
            out.rejects.append(Reject(display, unit.location, "dialogue", record))
        else:
            out.records.append((record, unit.location))
    return out


def parse_messages(path: Path, display: str, character: str | None = None) -> Parsed:
    return _parse(path, display, character, "messages")


def parse_sharegpt(path: Path, display: str, character: str | None = None) -> Parsed:
    return _parse(path, display, character, "conversations")
