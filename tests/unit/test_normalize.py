"""Normalisation, dedupe, reference checks, rejects file and splits.

    .venv/bin/python -m pytest tests/unit/test_normalize.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charops.data.importers import load_inputs
from charops.data.normalize import (
    holdout_for,
    normalize,
    normalize_text,
    split_dialogues,
    stable_fraction,
)
from charops.data.schema import Dialogue, PreferencePair, Turn
from charops.data.validate import check_references, load_and_check, write_rejects
from charops.errors import DataError
from charops.io import read_jsonl


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def dlg(id: str, character: str = "林小满", text: str = "你好") -> dict:
    return {"id": id, "character": character,
            "turns": [{"role": "user", "content": text}, {"role": "assistant", "content": "（笑）嗯"}]}


@pytest.mark.parametrize("raw, expected", [
    ("  a  \t b  ", "a b"),
    ("a\r\nb\rc", "a\nb\nc"),
    ("a\n\n\n\nb", "a\n\nb"),
    ("line one   \n   line two", "line one\nline two"),
    ("e\u0301", "\u00e9"),  # NFC composes
    ("（好奇）你好，世界！：", "（好奇）你好，世界！："),  # full-width kept (NFKC would not)
    ("\u3000\u3000首行缩进", "\u3000\u3000首行缩进"),  # ideographic space is text
    ("a\u00a0\u00a0b", "a b"),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_normalize_applies_to_records_and_drops_duplicates(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", [
        {"name": " 林小满 ", "interests": ["画画  ", "  "]},
        dlg("d1", text="你好  呀"),
        dlg("d2", text="你好 呀"),  # same content after normalising, other id: duplicate
        dlg("d3", character="林小满 ", text="你好 呀"),  # same after normalising the name too
        dlg("d4", text="不同的话"),
        {"id": "x1", "text": "文档"}, {"id": "x2", "text": "文档\n"},
        {"name": "林小满", "interests": ["画画"]},  # exact duplicate profile after normalising
    ])
    raw = load_inputs([f])
    result, dropped = normalize(raw)
    assert dropped == {"profile": 1, "dialogue": 2, "preference": 0, "document": 1}
    assert [d.id for d in result.dialogues] == ["d1", "d4"]
    assert result.dialogues[0].turns[0].content == "你好 呀"
    assert result.profiles[0].name == "林小满" and result.profiles[0].interests == ["画画"]
    assert [(r.location, r.reason) for r in result.rejects] == [
        ("line 8", "exact duplicate"), ("line 3", "exact duplicate"), ("line 4", "exact duplicate"),
        ("line 7", "exact duplicate")]
    s = result.summary()
    assert (s["read"], s["accepted"], s["rejected"]) == (8, 4, 4)
    assert (s["sources"][0]["accepted"], s["sources"][0]["rejected"]) == (4, 4)
    # the input result is untouched
    assert raw.dialogues[0].turns[0].content == "你好  呀" and len(raw.dialogues) == 4


def test_eval_prompt_is_not_a_duplicate_of_a_training_dialogue(tmp_path):
    train = dlg("a")
    evalp = dict(dlg("b"), meta={"eval_prompt": True})
    _, dropped = normalize(load_inputs([jsonl(tmp_path / "a.jsonl", [train, evalp])]))
    assert dropped["dialogue"] == 0


def test_check_references(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", [
        {"name": "林小满", "gender": "女"},
        {"name": "林小满", "gender": "男"},  # same name, other content
        dlg("d1"), dlg("d1", text="别的话"),  # same id, other content
        dlg("d2", character="无名氏"),
        {"id": "p1", "character": "路人", "context": [{"role": "user", "content": "hi"}],
         "chosen": "a", "rejected": "b"},
        {"id": "d1", "text": "a document may share an id with a dialogue"},
    ])
    result, dropped = load_and_check([f])
    assert sum(dropped.values()) == 0
    assert [(r.location, r.record_type, r.reason) for r in result.rejects] == [
        ("line 2", "profile", "duplicate profile name"), ("line 4", "dialogue", "duplicate id")]
    assert result.characters_without_profile == ["无名氏", "路人"]
    s = result.summary()
    assert s["characters_without_profile"] == ["无名氏", "路人"]
    assert s["read"] == s["accepted"] + s["rejected"] == 7
    assert "characters_without_profile" not in load_inputs([f]).summary()  # only once checked


def test_write_rejects(tmp_path):
    result = check_references(load_inputs([jsonl(tmp_path / "a.jsonl", [{"foo": 1}])]))
    out = tmp_path / "out" / "rejects.jsonl"
    assert write_rejects(out, result.rejects) == 1
    assert list(read_jsonl(out)) == [{"source": str(tmp_path / "a.jsonl"), "location": "line 1",
                                      "record_type": None, "reason": "unknown record type"}]
    assert [p.name for p in out.parent.iterdir()] == ["rejects.jsonl"]  # no temp file left


# --- splits ------------------------------------------------------------------------------------


def make(n: int, characters: list[str]) -> list[Dialogue]:
    return [Dialogue(id=f"d{i}", character=characters[i % len(characters)],
                     turns=[Turn(role="user", content=f"hi {i}")]) for i in range(n)]


def test_stable_fraction_reference():
    # sha256(b"0:d1") read as a big-endian 64-bit fraction, computed by hand with hashlib.
    import hashlib
    ref = int(hashlib.sha256(b"0:d1").hexdigest()[:16], 16) / 2**64
    assert stable_fraction("d1", 0) == ref
    assert stable_fraction("d1", 1) != ref


def test_split_by_dialogue_is_deterministic_and_stable():
    items = make(400, ["A", "B"])
    train, val = split_dialogues(items, 0.25, seed=3)
    assert (train, val) == split_dialogues(list(items), 0.25, seed=3)
    assert len(train) + len(val) == 400 and not {d.id for d in train} & {d.id for d in val}
    assert 70 <= len(val) <= 130  # binomial(400, 0.25): mean 100, sd 8.7
    assert {d.id for d in val} == {d.id for d in items if stable_fraction(d.id, 3) < 0.25}
    # an item's side does not depend on the other items
    _, val_half = split_dialogues(items[:200], 0.25, seed=3)
    assert {d.id for d in val_half} == {d.id for d in val if int(d.id[1:]) < 200}
    assert split_dialogues(items, 0.25, seed=4)[1] != val
    assert split_dialogues(items, 0.0) == (items, [])
    assert [d.id for d in train] == sorted((d.id for d in train), key=lambda s: int(s[1:]))  # order kept


def test_split_by_character_list():
    items = make(30, ["A", "B", "C"])
    train, val = split_dialogues(items, 0.0, by="character", holdout_characters=["B"])
    assert {d.character for d in val} == {"B"} and len(val) == 10
    assert "B" not in {d.character for d in train}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from("ABCDEFGHIJ"), min_size=1, max_size=10, unique=True),
       st.floats(0.05, 0.95), st.integers(0, 5))
def test_split_by_character_fraction_holds_out_whole_characters(chars, fraction, seed):
    items = make(50, chars)
    train, val = split_dialogues(items, fraction, seed=seed, by="character")
    held = set(holdout_for(chars, fraction, seed))
    assert {d.character for d in val} == held
    assert not held & {d.character for d in train}
    if len(chars) >= 2:
        assert 1 <= len(held) <= len(chars) - 1
        assert len(held) == min(max(1, round(fraction * len(chars))), len(chars) - 1)
    else:
        assert val == []


def test_split_works_for_preference_pairs():
    pairs = [PreferencePair(id=f"p{i}", character="AB"[i % 2], context=[Turn(role="user", content="q")],
                            chosen="yes", rejected="no") for i in range(20)]
    train, val = split_dialogues(pairs, 0.0, by="character", holdout_characters=["A"])
    assert {p.character for p in val} == {"A"} and {p.character for p in train} == {"B"}


def test_split_errors():
    with pytest.raises(DataError, match="validation_fraction"):
        split_dialogues([], 1.0)
    with pytest.raises(DataError, match="by='character'"):
        split_dialogues([], 0.1, holdout_characters=["A"])
