"""The ``sillytavern-chat`` importer: SillyTavern's saved chat JSONL (header, messages, swipes)
read by ``charops data validate`` into one dialogue with its swipes kept. The chat below has the
shape SillyTavern 1.12.6 writes (tests/unit/test_sillytavern.py checks a file it really saved).

    .venv/bin/python -m pytest tests/unit/test_sillytavern_chat.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charops.data.importers import detect_format, load_inputs
from charops.data.importers.sillytavern import ChatError, read_chat

HEADER = {"user_name": "Ana", "character_name": "Mara", "create_date": "2026-12-04@21h10m05s",
          "chat_metadata": {"integrity": "x", "note_prompt": ""}}
MESSAGES = [
    {"name": "Mara", "is_user": False, "is_system": False, "send_date": "December 4, 2026 9:10pm",
     "mes": "Ahoy! Mind the rocks.", "extra": {}, "swipe_id": 0,
     "swipes": ["Ahoy! Mind the rocks.", "Back again?"], "swipe_info": [{}, {}]},
    {"name": "Ana", "is_user": True, "is_system": False, "send_date": "December 4, 2026 9:10pm",
     "mes": "Is the lighthouse dark?", "extra": {}},
    {"name": "Mara", "is_user": False, "is_system": False, "send_date": "December 4, 2026 9:11pm",
     "mes": "Second try.", "extra": {"api": "custom", "model": "charops-chat:Mara"}, "swipe_id": 1,
     "swipes": ["First try.", "Second try."], "swipe_info": [{}, {}]},
    {"name": "SillyTavern System", "is_user": False, "is_system": True, "send_date": "",
     "mes": "[The scene changes]", "extra": {"type": "narrator"}},
    {"name": "Ana", "is_user": True, "is_system": False, "send_date": "", "mes": "And now?", "extra": {}},
]


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path


def test_read_chat_gives_messages_swipes_and_swipe_id(tmp_path):
    chat = read_chat(_write(tmp_path / "Mara - 1.jsonl", [HEADER, *MESSAGES]))
    assert (chat.character, chat.user_name) == ("Mara", "Ana")
    assert [m.role for m in chat.messages] == ["assistant", "user", "assistant", "system", "user"]
    third = chat.messages[2]
    assert (third.content, third.swipes, third.swipe_id, third.line) == (
        "Second try.", ["First try.", "Second try."], 1, 4)
    assert chat.messages[1].swipes == [] and chat.messages[1].swipe_id == 0


def test_validate_reads_a_chat_as_one_dialogue_with_swipes(tmp_path):
    path = _write(tmp_path / "Mara - 1.jsonl", [HEADER, *MESSAGES])
    assert detect_format(path) == "sillytavern-chat"
    result = load_inputs([path])
    assert not result.rejects and len(result.dialogues) == 1
    d = result.dialogues[0]
    assert d.character == "Mara" and d.source == str(path)
    assert [(t.role, t.content) for t in d.turns] == [
        ("assistant", "Ahoy! Mind the rocks."), ("user", "Is the lighthouse dark?"),
        ("assistant", "Second try."), ("user", "And now?")]
    assert d.meta["swipes"] == [{"turn": 0, "swipe_id": 0, "swipes": ["Ahoy! Mind the rocks.", "Back again?"]},
                                {"turn": 2, "swipe_id": 1, "swipes": ["First try.", "Second try."]}]
    assert d.meta["system_messages"] == [{"line": 5, "name": "SillyTavern System", "content": "[The scene changes]"}]
    assert d.meta["user_name"] == "Ana"


@pytest.mark.parametrize(("lines", "location", "reason"), [
    ([HEADER, {**MESSAGES[2], "swipe_id": 5}], "line 2", "'swipe_id' 5 does not index its 2 swipes"),
    ([HEADER, {**MESSAGES[1], "mes": 3}], "line 2", "'mes' must be a string"),
    ([HEADER, {"name": "x"}], "line 2", "not a chat message (needs 'mes' and 'is_user')"),
    ([MESSAGES[1]], "line 1", "the first line must be the chat header {user_name, character_name, ...}"),
    ([HEADER, {**MESSAGES[1], "mes": "  "}], "line 2",
     "a message with no text (the chat is left out: fix or delete the line)"),
])
def test_bad_chats_are_rejects_naming_the_line(tmp_path, lines, location, reason):
    path = _write(tmp_path / "bad.jsonl", lines)
    result = load_inputs([path], fmt="sillytavern-chat")
    assert not result.dialogues
    assert [(r.location, r.reason) for r in result.rejects] == [(location, reason)]


def test_read_chat_raises_on_a_file_that_is_not_a_chat(tmp_path):
    with pytest.raises(ChatError, match="line 1: the first line must be the chat header"):
        read_chat(_write(tmp_path / "x.jsonl", [{"messages": []}]))
