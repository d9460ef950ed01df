"""SillyTavern chats and Open WebUI feedback exports as feedback events; the feedback CLI.

    .venv/bin/python -m pytest tests/unit/test_feedback_import.py -x -q
"""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from charops.cli.main import app
from charops.feedback.importers import open_webui_events, sillytavern_events
from charops.feedback.store import read_events
from charops.storage import open_store

# The shape SillyTavern 1.12 saves (data/default-user/chats/<character>/<chat>.jsonl): a header
# line, then messages; character replies carry swipes, swipe_id (the one shown) and swipe_info.
ST_CHAT = [
    {"user_name": "User", "character_name": "林小满", "create_date": "2026-12-04@10h00m00s",
     "chat_metadata": {}},
    {"name": "林小满", "is_user": False, "is_system": False, "send_date": "December 4, 2026 10:00am",
     "mes": "（微笑）你好呀！", "extra": {}},
    {"name": "User", "is_user": True, "is_system": False, "send_date": "December 4, 2026 10:01am",
     "mes": "你在做什么？", "extra": {}},
    {"name": "林小满", "is_user": False, "send_date": "December 4, 2026 10:01am",
     "mes": "（放下书）在看历史书。", "swipe_id": 1,
     "swipes": ["我是AI助手。", "（放下书）在看历史书。", "看书。"],
     "swipe_info": [{}, {}, {}], "extra": {}},
    {"name": "User", "is_user": True, "send_date": "December 4, 2026 10:02am", "mes": "什么书？"},
    {"name": "林小满", "is_user": False, "send_date": "December 4, 2026 10:02am",
     "mes": "《史记》。", "swipe_id": 0, "swipes": ["《史记》。", "不告诉你。"]},
]


def write_st(tmp_path):
    d = tmp_path / "chats" / "林小满"
    d.mkdir(parents=True)
    path = d / "林小满 - 2026-12-04@10h00m00s.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ST_CHAT), encoding="utf-8")
    return path


def test_sillytavern_swipes_become_choose_events(tmp_path):
    events, skipped = sillytavern_events(write_st(tmp_path), "charops-chat")
    assert len(events) == 2
    first, last = events
    assert first["action"] == {"kind": "choose", "candidate": 1, "continued": True}
    assert [c["text"] for c in first["candidates"]] == ST_CHAT[3]["swipes"]
    # the greeting is part of what the model was given
    assert first["messages"] == [{"role": "assistant", "content": "（微笑）你好呀！"},
                                 {"role": "user", "content": "你在做什么？"}]
    assert first["at"] == "2026-12-04T10:01:00.000Z" and first["character"] == "林小满"
    # the last reply was shown but nobody wrote after it: chosen, not continued
    assert last["action"] == {"kind": "choose", "candidate": 0, "continued": False}
    assert last["messages"][-2] == {"role": "assistant", "content": "（放下书）在看历史书。"}
    assert dict(skipped) == {"reply without a user turn before it (greeting)": 1}


OWUI = [{
    "id": "fb-1", "user_id": "u1", "version": 0, "type": "rating",
    "data": {"rating": -1, "model_id": "charops-chat", "sibling_model_ids": None,
             "reason": "Not in character", "comment": "sounds like an assistant", "tags": [],
             "details": {"rating": 2}},
    "meta": {"arena": False, "chat_id": "chat-9", "message_id": "m2", "message_index": 1},
    "snapshot": {"chat": {"id": "chat-9", "title": "hi", "chat": {"history": {"currentId": "m2", "messages": {
        "m1": {"id": "m1", "parentId": None, "childrenIds": ["m2"], "role": "user", "content": "你好"},
        "m2": {"id": "m2", "parentId": "m1", "childrenIds": [], "role": "assistant",
               "content": "我是一个AI助手。", "model": "charops-chat"}}}}}},
    "created_at": 1796378400, "updated_at": 1796378400},
    {"id": "fb-2", "data": {"rating": 1}, "meta": {"message_id": "zz"}, "snapshot": {}},
]


def test_open_webui_ratings_become_thumbs(tmp_path):
    path = tmp_path / "feedback-export.json"
    path.write_text(json.dumps(OWUI), encoding="utf-8")
    events, skipped = open_webui_events(path, "charops-chat")
    assert len(events) == 1
    e = events[0]
    assert e["action"] == {"kind": "thumbs", "candidate": 0, "up": False,
                           "reason": "Not in character sounds like an assistant"}
    assert e["messages"] == [{"role": "user", "content": "你好"}]
    assert e["candidates"][0]["text"] == "我是一个AI助手。" and e["conversation"] == "owui:chat-9"
    assert dict(skipped) == {"no conversation snapshot": 1}


def test_cli_import_then_export(tmp_path):
    runner = CliRunner()
    store = tmp_path / "store"
    chat = write_st(tmp_path)
    args = ["feedback", "import", str(chat.parent), "--from", "sillytavern", "--model", "charops-chat",
            "--store", str(store), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["created"] == 2
    again = json.loads(runner.invoke(app, args).output)
    assert again["created"] == 0 and again["duplicate"] == 2  # importing twice stores nothing new
    assert len(read_events(open_store(str(store)), "charops-chat")) == 2

    out = tmp_path / "fb"
    res = runner.invoke(app, ["feedback", "export", "--model", "charops-chat", "--format", "dpo",
                              "--out", str(out), "--store", str(store), "--validation-fraction", "0"])
    assert res.exit_code == 0, res.output
    assert "read 2 = used 1 + dropped 1" in res.output and "swipe chosen but not continued" in res.output
    rows = [json.loads(x) for x in (out / "dpo" / "train.jsonl").read_text().splitlines()]
    assert sorted(r["rejected"][0]["content"] for r in rows) == ["我是AI助手。", "看书。"]
    assert all(r["chosen"][0]["content"] == "（放下书）在看历史书。" for r in rows)
    summary = yaml.safe_load((out / "feedback_summary.yaml").read_text())
    assert summary["sources"]["sillytavern"] == {"read": 2, "used": 1,
                                                 "dropped": {"swipe chosen but not continued": 1}}
    # an existing --out is never replaced without --overwrite
    res = runner.invoke(app, ["feedback", "export", "--model", "charops-chat", "--out", str(out),
                              "--store", str(store)])
    assert res.exit_code == 2 and "exists and is not empty; pass --overwrite" in res.output


def test_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"mes": "hi"}\n')
    res = CliRunner().invoke(app, ["feedback", "import", str(bad), "--from", "sillytavern",
                                   "--model", "charops-chat", "--store", str(tmp_path / "s")])
    assert res.exit_code == 2 and "the first line must be the chat header" in res.output
    assert "Traceback" not in res.output
