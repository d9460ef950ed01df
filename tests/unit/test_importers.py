"""Importers: every format on good and malformed input; read = accepted + rejected, always.

    .venv/bin/python -m pytest tests/unit/test_importers.py -x -q
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charops.data.importers import detect_format, load_inputs
from charops.errors import DataError


def write(path: Path, lines: list) -> Path:
    """JSONL: dicts/lists are dumped, strings written as they are (to plant bad lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
                    encoding="utf-8")
    return path


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def reasons(result) -> dict[str, str]:
    return {r.location: r.reason for r in result.rejects}


DIALOGUE = {"id": "d1", "character": "林小满",
            "turns": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "（笑）你好呀"}]}
PROFILE = {"name": "林小满", "gender": "女", "interests": "画画"}
PAIR = {"id": "p1", "character": "林小满", "context": [{"role": "user", "content": "周末去哪？"}],
        "chosen": "（眼睛一亮）去看海吧！", "rejected": "作为AI，我没有周末。"}
DOC = {"id": "doc1", "text": "小满住在海边的小镇。"}


# --- native --------------------------------------------------------------------------------


def test_native_infers_types_and_fills_source(tmp_path):
    f = write(tmp_path / "a.jsonl", [PROFILE, DIALOGUE, PAIR, DOC, {"type": "document", "text": "x"}])
    r = load_inputs([f])
    assert [len(r.profiles), len(r.dialogues), len(r.preferences), len(r.documents)] == [1, 1, 1, 2]
    assert r.rejects == []
    assert r.profiles[0].interests == ["画画"]
    assert r.dialogues[0].source == f"{f}:2"
    assert r.documents[1].id == "a-5"  # no id: file stem + line
    assert r.origin(r.preferences[0]) == (str(f), "line 3")
    s = r.summary()
    assert (s["read"], s["accepted"], s["rejected"]) == (5, 5, 0)
    assert s["sources"][0]["format"] == "native"


def test_native_keeps_explicit_source(tmp_path):
    f = write(tmp_path / "a.jsonl", [dict(DOC, source="novel ch.1")])
    assert load_inputs([f]).documents[0].source == "novel ch.1"


def test_native_malformed_lines(tmp_path):
    f = write(tmp_path / "bad.jsonl", [
        DIALOGUE,
        '{"id": "x", "character": ',  # line 2: truncated
        "[1, 2]",  # line 3
        {"foo": 1},  # line 4
        {"type": "poem", "text": "x"},  # line 5
        dict(DIALOGUE, id="d2", turns=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]),
        {"id": "d3", "turns": DIALOGUE["turns"]},  # line 7: no character
        dict(DIALOGUE, id="d4", turns="hello"),  # line 8: wrong type
        dict(PROFILE, category="heroes"),  # line 9: not a category
        dict(PROFILE, colour="red"),  # line 10: unknown field
        "",  # blank lines are not records
        dict(PAIR, context=[{"role": "assistant", "content": "hi"}]),  # line 12
    ])
    r = load_inputs([f])
    got = reasons(r)
    assert got["line 2"] == "invalid JSON"
    assert got["line 3"] == "not a JSON object"
    assert got["line 4"] == "unknown record type"
    assert got["line 5"] == "unknown record type"
    assert got["line 6"] == "turns[1].content: content is blank"
    assert got["line 7"] == "character: Field required"
    assert got["line 8"] == "turns: Input should be a valid list"
    assert got["line 9"].startswith("category: Input should be 'celebrity'")
    assert got["line 10"] == "colour: Extra inputs are not permitted"
    assert got["line 12"] == "context must end with a user turn"
    assert {x.location: x.record_type for x in r.rejects}["line 6"] == "dialogue"
    assert {x.location: x.record_type for x in r.rejects}["line 2"] is None
    s = r.summary()
    assert (s["read"], s["accepted"], s["rejected"]) == (11, 1, 10)
    assert s["rejected_by_reason"]["unknown record type"] == 2


def test_native_character_option_fills_missing_character(tmp_path):
    f = write(tmp_path / "a.jsonl", [{"id": "d3", "turns": DIALOGUE["turns"]}, dict(DIALOGUE, character="别人")])
    r = load_inputs([f], character="林小满")
    assert [d.character for d in r.dialogues] == ["林小满", "别人"]


def test_native_json_array_uses_indexes(tmp_path):
    f = write_json(tmp_path / "a.json", [DIALOGUE, {"id": "x"}])
    r = load_inputs([f])
    assert r.dialogues[0].source == f"{f}#0"
    assert [(x.location, x.reason) for x in r.rejects] == [("index 1", "unknown record type")]


def test_single_pretty_printed_record(tmp_path):
    f = write_json(tmp_path / "one.json", DIALOGUE)
    r = load_inputs([f])
    assert len(r.dialogues) == 1 and r.rejects == []


# --- messages / ShareGPT -----------------------------------------------------------------------


def test_openai_messages(tmp_path):
    msgs = [{"role": "system", "content": "你是小满"}, {"role": "user", "content": "hi", "name": "阿南"},
            {"role": "assistant", "content": [{"type": "text", "text": "你"}, {"type": "text", "text": "好"}]}]
    f = write(tmp_path / "chats.jsonl", [
        {"messages": msgs, "character": "林小满", "topic": "chit-chat", "lang": "zh"},
        {"messages": msgs, "name": "小白", "id": 7},
        {"messages": msgs},
    ])
    r = load_inputs([f], character="默认")
    a, b, c = r.dialogues
    assert (a.character, a.topic, a.id, a.meta) == ("林小满", "chit-chat", "chats-1", {"lang": "zh"})
    assert [t.role for t in a.turns] == ["system", "user", "assistant"]
    assert a.turns[1].name == "阿南" and a.turns[2].content == "你好"
    assert (b.character, b.id) == ("小白", "7")
    assert c.character == "默认"
    assert r.sources[0].format == "messages"


def test_openai_messages_rejects(tmp_path):
    ok = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    f = write(tmp_path / "chats.jsonl", [
        {"messages": ok},  # no character anywhere
        {"messages": ok + [{"role": "tool", "content": "x"}], "character": "A"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}], "character": "A"},
        {"messages": [{"role": "user", "content": 3}], "character": "A"},
        {"messages": [], "character": "A"},
        {"conversations": ok, "character": "A"},
        {"messages": ok + [{"role": "system", "content": "late"}], "character": "A"},
        {"messages": ok, "character": "A", "topic": "gossip"},
        {"messages": ok, "character": ["A"]},
    ])
    r = load_inputs([f])
    got = reasons(r)
    assert got["line 1"] == "no character: add a 'character' field or pass --character NAME"
    assert got["line 2"] == "messages[2].role: expected system, user or assistant"
    assert got["line 3"] == "messages[1].content: content is blank"
    assert got["line 4"] == "messages[0].content: missing or not text"
    assert got["line 5"].startswith("messages: List should have at least 1 item")
    assert got["line 6"] == "missing 'messages' list"
    assert got["line 7"] == "turns[2]: a system turn may only come first"
    assert got["line 8"].startswith("topic: Input should be")
    assert got["line 9"] == "character: Input should be a valid string"
    assert r.summary()["accepted"] == 0 and len(r.rejects) == 9


def test_sharegpt(tmp_path):
    conv = [{"from": "human", "value": "你是谁？"}, {"from": "gpt", "value": "（歪头）我是小满呀。"}]
    f = write_json(tmp_path / "sg.json", [
        {"conversations": conv, "system": "扮演小满", "id": "s1"},
        {"conversations": [{"from": "robot", "value": "x"}]},
        {"conversations": [{"from": "human", "value": None}]},
    ])
    assert detect_format(f) == "sharegpt"
    r = load_inputs([f], character="林小满")
    d = r.dialogues[0]
    assert [(t.role, t.content) for t in d.turns] == [("system", "扮演小满"), ("user", "你是谁？"),
                                                      ("assistant", "（歪头）我是小满呀。")]
    assert d.source == f"{f}#0" and d.id == "s1"
    assert reasons(r) == {"index 1": "conversations[0].from: expected human, gpt or system",
                          "index 2": "conversations[0].value: missing or not text"}


# --- CharacterEval -----------------------------------------------------------------------------


CE = [
    {"id": 11, "role": "孙悟空", "novel_name": "西游记",
     "context": "唐僧：悟空，你又去哪里了？\n孙悟空：（挠头）师父，俺老孙去化斋了。\n这斋饭可香了。\n猪八戒:猴哥，分我一点！"},
    {"id": 12, "role": "孙悟空", "novel_name": "西游记", "context": "唐僧：悟空？\n猪八戒：（他想：完了）\n沙僧：大师兄不在。"},
    {"id": 13, "role": "孙悟空", "novel_name": "西游记", "context": "（夜深了）\n唐僧：睡吧"},
    {"id": 14, "role": "孙悟空", "context": "唐僧：\n\n"},
    {"id": 15, "novel_name": "西游记", "context": "唐僧：hi"},
    "not an object",
    {"id": 16, "role": "孙悟空", "novel_name": "西游记", "context": "Tom: it is 10:30\n唐僧：现在10:30了"},
]


def test_charactereval_contexts(tmp_path):
    f = write_json(tmp_path / "test_data.jsonl", CE)  # a JSON array despite the name
    assert detect_format(f) == "charactereval"
    r = load_inputs([f])
    a, b, c = r.dialogues
    assert [(t.role, t.name, t.content) for t in a.turns] == [
        ("user", "唐僧", "悟空，你又去哪里了？"),
        ("assistant", None, "（挠头）师父，俺老孙去化斋了。\n这斋饭可香了。"),
        ("user", "猪八戒", "猴哥，分我一点！"),  # ASCII colon
    ]
    assert a.character == "孙悟空" and a.id == "test_data-11"
    assert a.meta == {"novel_name": "西游记", "eval_prompt": True, "original_id": 11}
    assert a.is_eval_prompt and a.source == f"{f}#0"
    # no line by the character; a colon inside a stage direction is not a speaker
    assert b.n_assistant_turns == 0
    assert b.turns[1].content == "（他想：完了）"
    assert [t.name for t in c.turns] == ["Tom", "唐僧"] and c.turns[0].content == "it is 10:30"
    assert c.turns[1].content == "现在10:30了"
    assert reasons(r) == {"index 2": "context: first line has no speaker",
                          "index 3": "context turn 1 (唐僧): empty utterance",
                          "index 4": "role: missing or not text",
                          "index 5": "not a JSON object"}


def test_charactereval_object_instead_of_array_is_one_file_reject(tmp_path):
    f = write_json(tmp_path / "test_data.json", {"id": 1, "role": "A", "context": "B：hi"})
    r = load_inputs([f], fmt="charactereval")
    assert len(r.rejects) == 1
    rej = r.rejects[0]
    assert (rej.location, rej.record_type) == ("file", None)
    assert rej.reason.startswith("not a JSON array")
    assert (r.sources[0].read, r.sources[0].rejected, r.sources[0].format) == (1, 1, "charactereval")


def test_charactereval_invalid_json_file(tmp_path):
    f = tmp_path / "t.json"
    f.write_text('[{"id": 1,', encoding="utf-8")
    r = load_inputs([f], fmt="charactereval")
    assert r.rejects[0].location == "file" and r.rejects[0].reason.startswith("invalid JSON (line 1")


CE_PROFILES = {
    "孙悟空": {
        "姓名": "孙悟空", "性别": "男", "物种": "石猴", "年龄": 500, "工作": "齐天大圣",
        "昵称": ["美猴王", "弼马温"], "人物经历": "大闹天宫；西天取经", "人物关系": {"师父": "唐僧", "师弟": "猪八戒"},
        "人物性格": ["桀骜", "忠诚"], "爱好": "吃桃", "喜欢的事情": ["打妖怪"], "喜欢的东西": "蟠桃",
        "不喜欢的事情": "念紧箍咒", "不喜欢的东西": ["紧箍"], "经典台词": ["俺老孙来也！"], "口头禅": "呔！",
        "恋爱状态": "单身", "居住地": "花果山", "其他": "会七十二变", "身高": "不高", "武器": "如意金箍棒",
    },
    "唐僧": "金蝉子转世，一心向佛。",
    "坏的": 42,
}


def test_charactereval_profiles(tmp_path):
    f = write_json(tmp_path / "character_profiles.json", CE_PROFILES)
    assert detect_format(f) == "charactereval-profiles"
    r = load_inputs([f])
    wk, ts = r.profiles
    assert (wk.name, wk.gender, wk.species, wk.age, wk.occupation) == ("孙悟空", "男", "石猴", "500", "齐天大圣")
    assert wk.nicknames == ["美猴王", "弼马温"]
    assert wk.experiences == ["大闹天宫；西天取经"]
    assert wk.relationships == ["师父：唐僧", "师弟：猪八戒"]
    assert wk.personality == "桀骜、忠诚"
    assert wk.interests == ["吃桃"]
    assert wk.likes == ["打妖怪", "蟠桃"] and wk.dislikes == ["念紧箍咒", "紧箍"]
    assert wk.classic_lines == ["俺老孙来也！"] and wk.catchphrases == ["呔！"]
    assert (wk.relationship_status, wk.residence) == ("单身", "花果山")
    assert wk.extra == {"其他": "会七十二变", "身高": "不高", "武器": "如意金箍棒"}
    assert wk.source == f"{f}#孙悟空"
    assert ts.identity == "金蝉子转世，一心向佛。"
    assert reasons(r) == {"key '坏的'": "profile must be an object of Chinese keys (or a text)"}


def test_charactereval_profile_name_mismatch_is_kept(tmp_path):
    f = write_json(tmp_path / "p.json", {"小满": {"姓名": "林小满", "性别": "女"}})
    p = load_inputs([f]).profiles[0]
    assert p.name == "小满" and p.extra == {"姓名": "林小满"}


def test_charactereval_profiles_not_an_object(tmp_path):
    f = write_json(tmp_path / "p.json", [1, 2])
    r = load_inputs([f], fmt="charactereval-profiles")
    assert [(x.location, x.reason[:10]) for x in r.rejects] == [("file", "not a JSON")]


# --- CharacterGLM cards ------------------------------------------------------------------------


def test_characterglm_cards(tmp_path):
    f = write_json(tmp_path / "character.json", {
        "苏婉嫣": {"user_info": "我是她的青梅竹马。", "bot_info": "傲娇，刀子嘴豆腐心。", "user_name": "张凯",
                 "bot_name": "苏婉嫣", "greeting": "（哭泣）对不起……"},
        "项羽": {"user_info": None, "bot_info": "西楚霸王。", "user_name": "用户", "bot_name": "", "greeting": "来者何人？"},
        "坏卡": "just text",
        "": {"bot_info": "no name at all", "bot_name": ""},
    })
    assert detect_format(f) == "characterglm"
    r = load_inputs([f])
    su, xy = r.profiles
    assert (su.name, su.identity, su.greeting) == ("苏婉嫣", "傲娇，刀子嘴豆腐心。", "（哭泣）对不起……")
    assert su.extra == {"user_info": "我是她的青梅竹马。", "user_name": "张凯"}
    assert xy.name == "项羽" and xy.extra == {"user_name": "用户"}  # null user_info dropped as empty
    assert reasons(r) == {"key '坏卡'": "card must be a JSON object", "key ''": "name: String should have at least 1 character"}


# --- text --------------------------------------------------------------------------------------


def test_text_paragraphs(tmp_path):
    f = tmp_path / "novel.txt"
    f.write_text("第一段。\n还是第一段。\n\n\n第二段。\r\n\r\n   \n第三段\n", encoding="utf-8")
    r = load_inputs([f])
    assert [(d.id, d.text, d.source) for d in r.documents] == [
        ("novel-1", "第一段。\n还是第一段。", f"{f}:1"),
        ("novel-2", "第二段。", f"{f}:5"),
        ("novel-3", "第三段", f"{f}:8"),
    ]
    assert r.sources[0].format == "text"


def test_text_jsonl(tmp_path):
    f = write(tmp_path / "corpus.jsonl", [
        {"text": "一", "url": "http://x", "language": "zh"},
        {"text": "  ", "id": "blank"},
        {"body": "no text"},
        {"text": "二", "meta": {"a": 1}, "b": 2},
    ])
    assert detect_format(f) == "text"
    r = load_inputs([f])
    one, two = r.documents
    assert (one.id, one.language, one.meta) == ("corpus-1", "zh", {"url": "http://x"})
    assert two.meta == {"a": 1, "b": 2}
    assert reasons(r) == {"line 2": "text: text is blank", "line 3": "text: Field required"}


def test_non_utf8_file_is_one_reject(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("caf\xe9".encode("latin-1"))
    r = load_inputs([f])
    assert [(x.location, x.reason) for x in r.rejects] == [("file", "not UTF-8 text (first bad byte 0xe9 at byte 3, line 1)")]


# --- detection, directories, errors --------------------------------------------------------------


def test_detection_and_directory_walk(tmp_path):
    d = tmp_path / "data"
    write(d / "b" / "chats.jsonl", [{"messages": DIALOGUE["turns"], "character": "林小满"}])
    write(d / "a.jsonl", [DIALOGUE])
    write_json(d / "ce.json", CE[:1])
    write(d / ".hidden.jsonl", ["garbage"])
    (d / "notes.md").write_text("# not data", encoding="utf-8")
    write(d / "sg.jsonl", ["not json", {"conversations": [{"from": "human", "value": "hi"}], "character": "X"}])
    r = load_inputs([d, d / "a.jsonl"])  # a file named twice is read once
    assert [(Path(s.path).relative_to(d).as_posix(), s.format) for s in r.sources] == [
        ("a.jsonl", "native"), ("b/chats.jsonl", "messages"), ("ce.json", "charactereval"), ("sg.jsonl", "sharegpt")]
    assert r.summary()["read"] == 5


def test_unsupported_file_and_undetectable_object(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    obj = write_json(tmp_path / "o.json", {"a": 1, "b": [2]})
    r = load_inputs([csv, obj])
    assert [s.format for s in r.sources] == ["unknown", "unknown"]
    assert r.rejects[0].reason.startswith("unsupported file type '.csv'")
    assert r.rejects[1].reason.startswith("cannot detect the format")
    # with an explicit format the extension does not matter
    write(csv, [DIALOGUE])
    assert len(load_inputs([csv], fmt="native").dialogues) == 1


def test_missing_path_and_bad_format_are_errors(tmp_path):
    with pytest.raises(DataError, match="nope: no such file or directory"):
        load_inputs([tmp_path / "nope"])
    with pytest.raises(DataError, match="unknown format 'csv'"):
        load_inputs([tmp_path], fmt="csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .jsonl, .json or .txt file"):
        load_inputs([tmp_path / "empty"])


# --- property: nothing is lost -----------------------------------------------------------------

GOOD = st.sampled_from([DIALOGUE, PROFILE, PAIR, DOC, {"type": "document", "text": "文本"}])
BAD = st.sampled_from([
    "{not json", "null", "42", '"text"', {"foo": 1}, {"type": "x"},
    dict(DIALOGUE, turns=[]), dict(DIALOGUE, turns=[{"role": "user", "content": "\t"}]),
    dict(PROFILE, name=" "), dict(PAIR, chosen="同", rejected="同"), {"text": ""},
    dict(DIALOGUE, character=5), dict(DOC, language="fr"), {"type": ["dialogue"]}, {"type": None},
])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), GOOD, BAD), min_size=0, max_size=25),
       st.sampled_from(["jsonl", "json"]))
def test_every_unit_is_accepted_or_rejected(rows, container):
    lines = [good if ok else bad for ok, good, bad in rows]
    expect_ok = [ok for ok, _, _ in rows]
    with tempfile.TemporaryDirectory() as tmp:
        if container == "jsonl":
            f = write(Path(tmp) / "mix.jsonl", lines)
            locs = [f"line {i + 1}" for i in range(len(lines))]
        else:
            values = [json.loads(x) if isinstance(x, str) and x != "{not json" else x for x in lines]
            if any(x == "{not json" for x in values):  # not expressible inside a JSON array
                values = [x for x in values if x != "{not json"]
                expect_ok = [ok for ok, x in zip(expect_ok, lines, strict=True) if x != "{not json"]
            f = write_json(Path(tmp) / "mix.json", values)
            locs = [f"index {i}" for i in range(len(values))]
        r = load_inputs([f], fmt="native")
        s = r.summary()
        assert s["read"] == s["accepted"] + s["rejected"] == len(locs)
        assert sum(s["accepted_by_type"].values()) == s["accepted"]
        accepted_at = [r.origin(rec)[1] for rec in r.records()]
        rejected_at = [x.location for x in r.rejects]
        assert all(x.reason and "\n" not in x.reason for x in r.rejects)
        assert sorted(accepted_at + rejected_at) == sorted(locs)  # each unit exactly once
        assert {locs[i] for i, ok in enumerate(expect_ok) if ok} == set(accepted_at)
        assert sum(s["rejected_by_reason"].values()) == s["rejected"]


def test_examples_in_data_format_doc_are_accepted(tmp_path):
    """Every one-line JSON example in docs/data-format.md imports cleanly (the doc stays true)."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "data-format.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)\n```", doc, flags=re.S)
    examples = [b for b in blocks if "\n" not in b.strip() and '"reason"' not in b]
    assert len(examples) == 9  # 4 native types + one per importer
    for i, block in enumerate(examples):
        f = tmp_path / f"ex{i}.json"
        f.write_text(block, encoding="utf-8")
        r = load_inputs([f])
        assert r.rejects == [] and r.summary()["accepted"] >= 1, (block, r.rejects)
