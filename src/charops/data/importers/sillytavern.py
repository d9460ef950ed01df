"""SillyTavern's saved chats (``data/<user>/chats/<character>/<name>.jsonl``) as charops records.

A chat file is JSONL: line 1 a header ``{"user_name", "character_name", "create_date",
"chat_metadata"}``, then one message per line ``{"name", "is_user", "is_system", "send_date",
"mes", "extra", "swipes", "swipe_id", "swipe_info"}``. ``swipes`` are the alternative replies a
user generated for one turn (``swipe_id`` the one shown, which ``mes`` holds).

:func:`read_chat` is the reader (the feedback import uses it too): the header, and every message
with its role, text, swipes and ``swipe_id``. :func:`parse` (format ``sillytavern-chat``) makes
one :class:`~charops.data.schema.Dialogue` per file: the shown text of each turn, the swipes of
turns that have more than one in ``meta.swipes`` (``{"turn", "swipe_id", "swipes"}``), and
SillyTavern's system/narrator messages (which a dialogue cannot hold mid-way) in
``meta.system_messages``, so nothing is dropped::

    from pathlib import Path
    from charops.data.importers.sillytavern import read_chat
    chat = read_chat(Path("data/default-user/chats/Mara/Mara - 2026-12-04@21h.jsonl"))
    chat.character, [(m.role, m.content, m.swipes, m.swipe_id) for m in chat.messages]

or ``charops data validate CHAT.jsonl --format sillytavern-chat`` (detected on its own).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from charops.data.importers.common import FileRejected, Parsed, Reject, build, json_units
from charops.data.schema import Dialogue

FORMAT = "sillytavern-chat"


class ChatError(ValueError):
    """A chat file that is not a SillyTavern chat; the message names the line and field."""


@dataclasses.dataclass
class ChatMessage:
    role: str  # "user", "assistant" or "system" (SillyTavern's narrator / system notes)
    name: str
    content: str  # the text shown: swipes[swipe_id] when there are swipes
    swipes: list[str]
    swipe_id: int
    line: int
    raw: dict[str, Any]


@dataclasses.dataclass
class Chat:
    character: str
    user_name: str
    header: dict[str, Any]
    messages: list[ChatMessage]


def is_header(obj: Any) -> bool:
    return isinstance(obj, dict) and "character_name" in obj and "user_name" in obj and "mes" not in obj


def is_message(obj: Any) -> bool:
    return isinstance(obj, dict) and "mes" in obj and "is_user" in obj


def _message(obj: dict, line: int) -> ChatMessage:
    where = f"line {line}"
    if not isinstance(obj.get("mes"), str):
        raise ChatError(f"{where}: 'mes' must be a string")
    if obj.get("is_system"):
        role = "system"
    else:
        role = "user" if obj.get("is_user") else "assistant"
    swipes = obj.get("swipes")
    if swipes is None:
        swipes = []
    if not isinstance(swipes, list) or not all(isinstance(s, str) for s in swipes):
        raise ChatError(f"{where}: 'swipes' must be a list of strings")
    swipe_id = obj.get("swipe_id", 0)
    if isinstance(swipe_id, bool) or not isinstance(swipe_id, int) or (swipes and not 0 <= swipe_id < len(swipes)):
        raise ChatError(f"{where}: 'swipe_id' {swipe_id!r} does not index its {len(swipes)} swipes")
    # SillyTavern keeps ``mes`` equal to the shown swipe; the swipe is what the user picked.
    content = swipes[swipe_id] if swipes else obj["mes"]
    return ChatMessage(role=role, name=str(obj.get("name") or ""), content=content, swipes=list(swipes),
                       swipe_id=swipe_id if swipes else 0, line=line, raw=obj)


def read_chat(path: Path) -> Chat:
    """The header and messages of a SillyTavern chat file; ChatError (naming the line) if it is
    not one."""
    header: dict | None = None
    messages: list[ChatMessage] = []
    for unit in json_units(path):
        line = int(unit.location.split()[-1]) if unit.location.startswith("line") else 0
        if unit.error:
            raise ChatError(f"{unit.location}: {unit.error}")
        obj = unit.value
        if header is None:
            if not is_header(obj):
                raise ChatError(f"{unit.location}: the first line must be the chat header "
                                "{user_name, character_name, ...}")
            header = obj
            continue
        if not is_message(obj):
            raise ChatError(f"{unit.location}: not a chat message (needs 'mes' and 'is_user')")
        messages.append(_message(obj, line))
    if header is None:
        raise ChatError("empty file: no chat header")
    character = header.get("character_name")
    if not isinstance(character, str) or not character.strip():
        raise ChatError("line 1: 'character_name' must be a non-blank string")
    user = header.get("user_name")
    return Chat(character=character.strip(), user_name=user if isinstance(user, str) else "User",
                header=header, messages=messages)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", text, flags=re.UNICODE).strip("-") or "chat"


def parse(path: Path, display: str, character: str | None = None) -> Parsed:
    """One Dialogue per chat file (``character`` overrides the header's character name)."""
    out = Parsed()
    try:
        chat = read_chat(path)
    except ChatError as exc:
        where, _, reason = str(exc).partition(": ")
        if not where.startswith("line"):
            raise FileRejected(str(exc)) from None
        out.rejects.append(Reject(display, where, "dialogue", reason))
        return out
    turns, swipes, system = [], [], []
    for m in chat.messages:
        if m.role == "system":
            system.append({"line": m.line, "name": m.name, "content": m.content})
            continue
        if not m.content.strip():
            out.rejects.append(Reject(display, f"line {m.line}", "dialogue",
                                      "a message with no text (the chat is left out: fix or delete the line)"))
            return out
        turn = {"role": m.role, "content": m.content}
        if m.role == "user" and m.name and m.name != chat.user_name:
            turn["name"] = m.name  # another persona speaking in the same chat
        if len(m.swipes) > 1:
            swipes.append({"turn": len(turns), "swipe_id": m.swipe_id, "swipes": m.swipes})
        turns.append(turn)
    if not turns:
        out.rejects.append(Reject(display, "line 1", "dialogue", "the chat has no messages"))
        return out
    meta: dict[str, Any] = {"format": FORMAT, "user_name": chat.user_name}
    if swipes:
        meta["swipes"] = swipes
    if system:
        meta["system_messages"] = system
    if chat.header.get("create_date"):
        meta["create_date"] = chat.header["create_date"]
    record = build(Dialogue, {"id": f"st-{_slug(path.stem)}", "character": character or chat.character,
                              "turns": turns, "source": display, "meta": meta})
    if isinstance(record, str):
        out.rejects.append(Reject(display, "line 1", "dialogue", record))
    else:
        out.records.append((record, "line 1"))
    return out
