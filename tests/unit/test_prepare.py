"""data prepare: dataset layout, labels, rejects and counts, determinism, atomicity.

    .venv/bin/python -m pytest tests/unit/test_prepare.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charops.config import load_config
from charops.data.prepare import TOO_LONG, PrepareConfig, run
from charops.data.render import render_system_prompt
from charops.data.schema import CharacterProfile
from charops.errors import CharopsError
from charops.io import read_jsonl, sha256_tree
from charops.model.load import load_tokenizer

PROFILES = [
    {"type": "profile", "name": "小明", "category": "daily-life", "language": "zh", "identity": "大学生",
     "interests": ["看书", "散步"], "linguistic_style": "温柔，爱用括号表达动作"},
    {"type": "profile", "name": "Ava", "category": "games-videos", "language": "en",
     "identity": "a space pilot", "personality": "brave and witty"},
]


def _dialogue(i, character, turns, **kw):
    return {"type": "dialogue", "id": f"d{i}", "character": character, "topic": "chit-chat", "turns": turns, **kw}


def write_inputs(root: Path, n: int = 24) -> Path:
    """A small native dataset with every case prepare must handle, and 3 bad lines."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "characters.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PROFILES))
    rows = []
    for i in range(n):
        who = "小明" if i % 2 else "Ava"
        rows.append(_dialogue(i, who, [
            {"role": "user", "content": f"你好{i}"},
            {"role": "assistant", "content": f"（微笑）你好呀{i}！"},
            {"role": "user", "content": "今天做什么？", "name": "小红"},
            {"role": "assistant", "content": f"看书，第{i}本。"},
            {"role": "user", "content": "好的"},  # after the last reply: not part of the SFT example
        ]))
    rows.append(_dialogue("x", "路人", [{"role": "user", "content": "hi"},
                                        {"role": "assistant", "content": "hello there"}]))
    rows.append(_dialogue("scene", "小明", [{"role": "system", "content": "场景：图书馆。"},
                                            {"role": "user", "content": "嘘"},
                                            {"role": "assistant", "content": "（小声）好。"}]))
    rows.append(_dialogue("e1", "小明", [{"role": "user", "content": "你喜欢什么书？"}], meta={"eval_prompt": True}))
    rows.append(_dialogue("e2", "Ava", [{"role": "user", "content": "Where to?"},
                                        {"role": "assistant", "content": "To the stars."}], meta={"eval_prompt": True}))
    rows.append(_dialogue("noreply", "Ava", [{"role": "user", "content": "anyone?"}]))
    rows.append(_dialogue("long", "Ava", [{"role": "user", "content": "tell me everything"},
                                          {"role": "assistant", "content": "Once upon a time, " * 120}]))
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines.insert(3, lines[2])  # an exact duplicate
    lines.append("{bad json")
    lines.append(json.dumps({"type": "dialogue", "id": "blank", "character": "Ava",
                             "turns": [{"role": "user", "content": "  "}]}))
    (root / "dialogues.jsonl").write_text("\n".join(lines) + "\n")
    with open(root / "preferences.jsonl", "w") as fh:
        for i in range(6):
            fh.write(json.dumps({"type": "preference", "id": f"p{i}", "character": "小明",
                                 "context": [{"role": "user", "content": f"在干嘛{i}"}],
                                 "chosen": "（抬头）在看书呢。", "rejected": "作为AI语言模型，我无法看书。"},
                                ensure_ascii=False) + "\n")
    with open(root / "corpus.jsonl", "w") as fh:
        for i in range(10):
            fh.write(json.dumps({"type": "document", "id": f"c{i}", "text": "今天天气很好，我们去公园散步。" * (i + 1)},
                                ensure_ascii=False) + "\n")
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return write_inputs(tmp_path_factory.mktemp("inputs"))


def _cfg(model, inputs, out, *overrides):
    return load_config(PrepareConfig, "default", [f"model={model}", f"inputs={inputs}", f"output_dir={out}",
                                                  "max_seq_len=512", "block_size=32", "progress=false",
                                                  "validation_fraction=0.25", *overrides])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, micro_model_dir, inputs) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared") / "ds"
    return out, run(_cfg(micro_model_dir, inputs, out))


def _rows(out, name):
    return list(read_jsonl(out / name))


def _sft_rows(out):
    return _rows(out, "sft/train.jsonl") + _rows(out, "sft/validation.jsonl")


def _runs(ids, labels):
    runs, cur = [], []
    for t, lab in zip(ids, labels, strict=True):
        if lab != -100:
            assert lab == t
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def test_layout(prepared):
    out, manifest = prepared
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["characters.jsonl", "dpo/train.jsonl", "dpo/validation.jsonl", "eval/prompts.jsonl",
                     "manifest.json", "pretrain/train.jsonl", "pretrain/validation.jsonl", "rejects.jsonl",
                     "sft/train.jsonl", "sft/validation.jsonl"]
    assert manifest["content_sha256"] == sha256_tree(out, exclude=["manifest.json"])
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == {k: v for k, v in manifest.items() if k != "output_dir"}
    assert {"schema_version", "charops_version", "sources", "counts", "tokens", "tokenizer", "config"} <= on_disk.keys()


def test_sft_labels_are_exactly_the_assistant_turns(prepared, micro_model_dir):
    out, _ = prepared
    tok = load_tokenizer(micro_model_dir)
    rows = _sft_rows(out)
    assert len(rows) == 24 + 2  # the 24 + "x" + "scene"; duplicates/eval/no reply/too long excluded
    for row in rows:
        replies = [m["content"] + "<|im_end|>" for m in row["messages"] if m["role"] == "assistant"]
        assert [tok.decode(r) for r in _runs(row["input_ids"], row["labels"])] == replies
        assert row["messages"][-1]["role"] == "assistant"  # trailing user turn cut
        assert row["input_ids"] == tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]


def test_system_prompts(prepared):
    out, _ = prepared
    by_id = {r["id"]: r for r in _sft_rows(out)}
    xiaoming = CharacterProfile(**PROFILES[0])
    assert by_id["d1"]["messages"][0] == {"role": "system", "content": render_system_prompt(xiaoming)}
    assert by_id["d1"]["category"] == "daily-life" and by_id["d1"]["language"] == "zh"
    assert by_id["d0"]["language"] == "en" and by_id["d0"]["category"] == "games-videos"
    assert by_id["dx"]["messages"][0] == {"role": "system", "content": "You are 路人."}
    assert by_id["dscene"]["messages"][0]["content"] == render_system_prompt(xiaoming) + "\n\n场景：图书馆。"
    assert by_id["d3"]["messages"][3] == {"role": "user", "content": "今天做什么？", "name": "小红"}


def test_last_turn_only(tmp_path, micro_model_dir, inputs):
    out = tmp_path / "ds"
    run(_cfg(micro_model_dir, inputs, out, "last_turn_only=true"))
    tok = load_tokenizer(micro_model_dir)
    for row in _sft_rows(out):
        runs = _runs(row["input_ids"], row["labels"])
        assert [tok.decode(r) for r in runs] == [row["messages"][-1]["content"] + "<|im_end|>"]


def test_rejects_and_counts_add_up(prepared):
    out, manifest = prepared
    c = manifest["counts"]
    rejects = _rows(out, "rejects.jsonl")
    assert c["read"] == c["accepted"] + c["rejected"] == 2 + 33 + 6 + 10  # profiles, dialogue lines, pairs, documents
    assert len(rejects) == c["rejected"] == sum(c["rejected_by_reason"].values())
    assert c["rejected_by_reason"] == {"exact duplicate": 1, "invalid JSON": 1, TOO_LONG: 1,
                                       "no assistant turn to learn from": 1,
                                       **{r: 1 for r in c["rejected_by_reason"] if "blank" in r}}
    assert c["duplicates_dropped"]["dialogue"] == 1
    for s in manifest["sources"]:
        assert s["read"] == s["accepted"] + s["rejected"]
    long = next(r for r in rejects if r["reason"] == TOO_LONG)
    assert long["source"].endswith("dialogues.jsonl") and long["location"] == "line 31"
    assert c["accepted_by_type"]["dialogue"] == c["sft"]["train"] + c["sft"]["validation"] + c["eval_prompts"]
    assert c["sft"]["validation"] > 0 and c["dpo"]["train"] + c["dpo"]["validation"] == 6


def test_token_statistics(prepared):
    out, manifest = prepared
    for split in ("train", "validation"):
        rows = _rows(out, f"sft/{split}.jsonl")
        stats = manifest["tokens"]["sft"][split]
        lengths = [len(r["input_ids"]) for r in rows]
        assert stats["examples"] == len(rows) and stats["tokens"] == sum(lengths)
        assert stats["max_length"] == max(lengths) <= 512
        assert stats["supervised_tokens"] == sum(x != -100 for r in rows for x in r["labels"])
        assert stats["mean_length"] == round(sum(lengths) / len(lengths), 3)


def test_dpo_rows(prepared):
    out, _ = prepared
    for row in _rows(out, "dpo/train.jsonl") + _rows(out, "dpo/validation.jsonl"):
        assert row["prompt"][0]["role"] == "system" and row["prompt"][-1] == {
            "role": "user", "content": f"在干嘛{row['id'][1:]}"}
        assert row["chosen"] == [{"role": "assistant", "content": "（抬头）在看书呢。"}]
        assert row["rejected"] == [{"role": "assistant", "content": "作为AI语言模型，我无法看书。"}]


def test_eval_prompts(prepared):
    out, _ = prepared
    rows = {r["id"]: r for r in _rows(out, "eval/prompts.jsonl")}
    assert set(rows) == {"de1", "de2"}
    assert rows["de1"]["messages"][-1] == {"role": "user", "content": "你喜欢什么书？"} and rows["de1"]["reference"] is None
    assert rows["de2"]["messages"][-1]["role"] == "user" and rows["de2"]["reference"] == "To the stars."


def test_pretrain_blocks_keep_every_token(prepared, micro_model_dir, inputs):
    out, manifest = prepared
    tok = load_tokenizer(micro_model_dir)
    texts = [r["text"] for r in read_jsonl(inputs / "corpus.jsonl")]
    expected = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    blocks = _rows(out, "pretrain/train.jsonl") + _rows(out, "pretrain/validation.jsonl")
    assert all(len(b["input_ids"]) == len(b["position_ids"]) == 32 for b in blocks)
    real = [t for b in blocks for t in b["labels"] if t != -100]
    assert len(real) == expected
    assert real.count(0) == len(texts)  # one <|endoftext|> per document
    stats = manifest["tokens"]["pretrain"]
    assert stats["train"]["tokens"] + stats["validation"]["tokens"] == expected


def test_same_input_same_bytes(tmp_path, micro_model_dir, inputs, prepared):
    out, manifest = prepared
    again = tmp_path / "elsewhere"
    m2 = run(_cfg(micro_model_dir, inputs, again))
    assert sha256_tree(again) == sha256_tree(out)
    assert m2["content_sha256"] == manifest["content_sha256"]


def test_split_by_character(tmp_path, micro_model_dir, inputs):
    out = tmp_path / "ds"
    run(_cfg(micro_model_dir, inputs, out, "split_by=character", "holdout_characters=[Ava]",
             "allow_empty_split=true"))  # every pair is 小明's: dpo has no validation split
    assert {r["character"] for r in _rows(out, "sft/validation.jsonl")} == {"Ava"}
    assert "Ava" not in {r["character"] for r in _rows(out, "sft/train.jsonl")}


def test_existing_output_is_an_error(tmp_path, micro_model_dir, inputs):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "x").write_text("keep")
    with pytest.raises(CharopsError, match="exists and is not empty"):
        run(_cfg(micro_model_dir, inputs, out))
    assert (out / "x").read_text() == "keep"
    run(_cfg(micro_model_dir, inputs, out, "overwrite=true"))
    assert not (out / "x").exists() and (out / "manifest.json").is_file()


def test_strict_writes_nothing(tmp_path, micro_model_dir, inputs):
    out = tmp_path / "ds"
    with pytest.raises(CharopsError, match=r"records rejected \(.*invalid JSON.*\); nothing written"):
        run(_cfg(micro_model_dir, inputs, out, "strict=true"))
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing(tmp_path, micro_model_dir, inputs, monkeypatch):
    import charops.data.prepare as prepare

    calls = []

    def failing(path, rows):
        calls.append(path)
        if len(calls) == 4:
            raise OSError("disk full")
        from charops.io import write_jsonl
        return write_jsonl(path, rows)

    monkeypatch.setattr(prepare, "write_jsonl", failing)
    with pytest.raises(OSError, match="disk full"):
        run(_cfg(micro_model_dir, inputs, tmp_path / "ds"))
    assert list(tmp_path.iterdir()) == []


def test_nothing_accepted_is_an_error(tmp_path, micro_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{nope\n[1,2]\n")
    with pytest.raises(CharopsError, match="no record accepted"):
        run(_cfg(micro_model_dir, bad, tmp_path / "ds"))
    assert not (tmp_path / "ds").exists()


def test_missing_model_is_one_line_error(tmp_path, inputs):
    with pytest.raises(CharopsError, match="base model '/nonexistent/m' does not exist"):
        run(_cfg("/nonexistent/m", inputs, tmp_path / "ds"))


def test_cli_prepare(tmp_path, micro_model_dir, inputs):
    from typer.testing import CliRunner

    from charops.cli.main import app

    out = tmp_path / "ds"
    args = ["data", "prepare", str(inputs), "--model", str(micro_model_dir), "--out", str(out),
            "max_seq_len=512", "block_size=32", "validation_fraction=0.25", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    manifest = json.loads(res.stdout)
    assert manifest["output_dir"] == str(out) and manifest["config"]["max_seq_len"] == 512
    assert manifest["config"]["inputs"] == [str(inputs)]
    again = CliRunner().invoke(app, [*args[:-1], "--strict", "--overwrite", "-q"])
    assert again.exit_code == 2 and "error:" in again.output and "--strict" in again.output
    assert (out / "manifest.json").is_file()  # the earlier dataset is untouched
