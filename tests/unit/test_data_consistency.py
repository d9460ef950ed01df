"""``data validate`` and ``data prepare`` agree, and bad set-ups fail early (issue 7, consistency).

    .venv/bin/python -m pytest tests/unit/test_data_consistency.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from typer.testing import CliRunner

from charops.cli.main import app
from charops.config import load_config
from charops.data.prepare import PrepareConfig, run
from charops.errors import CharopsError

runner = CliRunner()


def _dialogue(i, who, turns, **kw):
    return {"type": "dialogue", "id": f"d{i}", "character": who, "turns": turns, **kw}


def _turns(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def write_mixed(root: Path) -> Path:
    """Two characters, 40 good dialogues, one with no reply, one far too long, 6 pairs."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"type": "profile", "name": "小明"}, {"type": "profile", "name": "Ava", "language": "en"}]
    for i in range(40):
        rows.append(_dialogue(i, "小明" if i % 2 else "Ava", _turns(("user", f"你好{i}"), ("assistant", f"（笑）你好{i}"))))
    rows.append(_dialogue("noreply", "Ava", _turns(("user", "anyone?"))))
    rows.append(_dialogue("long", "Ava", _turns(("user", "tell me"), ("assistant", "Once upon a time, " * 200))))
    for i in range(6):
        rows.append({"type": "preference", "id": f"p{i}", "character": "小明", "context": _turns(("user", f"在干嘛{i}")),
                     "chosen": "（抬头）在看书呢。", "rejected": "作为AI，我无法看书。"})
    (root / "data.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return root


def _validate(*args):
    res = runner.invoke(app, ["data", "validate", *map(str, args), "--json"])
    return res, (json.loads(res.stdout) if res.stdout.strip().startswith("{") else None)


def test_validate_with_the_model_reports_what_prepare_rejects(tmp_path, micro_model_dir):
    data = write_mixed(tmp_path / "data")
    res, v = _validate(data, "--model", micro_model_dir, "--max-seq-len", 256)
    assert res.exit_code == 0, res.output
    manifest = run(load_config(PrepareConfig, None, [f"inputs={data}", f"model={micro_model_dir}", "max_seq_len=256",
                                                     f"output_dir={tmp_path / 'ds'}", "progress=false",
                                                     "block_size=16", "validation_fraction=0.25"]))
    c = manifest["counts"]
    assert v["rejected_by_reason"] == c["rejected_by_reason"] == {
        "longer than max_seq_len": 1, "no assistant turn to learn from": 1}
    assert (v["read"], v["accepted"], v["rejected"]) == (c["read"], c["accepted"], c["rejected"])
    assert v["not_checked"] == []


def test_validate_without_the_model_says_what_it_could_not_check(tmp_path):
    data = write_mixed(tmp_path / "data")
    res, v = _validate(data)
    assert res.exit_code == 0, res.output
    assert v["rejected_by_reason"] == {"no assistant turn to learn from": 1}  # needs no tokenizer
    assert v["not_checked"] == ["longer than max_seq_len (needs the tokenizer: pass --model)"]
    text = runner.invoke(app, ["data", "validate", str(data)])
    assert "not checked: longer than max_seq_len (needs the tokenizer: pass --model)" in text.output


def test_reject_table_documents_every_reason_prepare_adds():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "data-format.md").read_text(encoding="utf-8")
    from charops.data.importers.common import TOO_DEEP
    from charops.data.prepare import NO_REPLY, TOO_LONG

    for reason in (TOO_LONG, NO_REPLY, TOO_DEEP, "lone surrogate", "chosen and rejected are the same text",
                   "record over max_record_bytes", "not UTF-8 text", "a charops rejects file"):
        assert reason in doc, reason


def test_pairs_identical_after_normalisation_are_rejects(tmp_path):
    rows = [{"type": "preference", "id": "p1", "character": "小明", "context": _turns(("user", "hi")),
             "chosen": "Cafe\u0301  is   open.", "rejected": "Café is open."},
            {"type": "preference", "id": "p2", "character": "小明", "context": _turns(("user", "hi")),
             "chosen": "在看书呢。", "rejected": "在  看书呢。"}]
    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    res, v = _validate(f)
    assert v["rejected_by_reason"] == {"chosen and rejected are the same text": 1}
    assert v["accepted_by_type"]["preference"] == 1


def test_non_utf8_reject_names_the_byte_offset_and_line(tmp_path):
    f = tmp_path / "latin1.jsonl"
    good = json.dumps(_dialogue(1, "小明", _turns(("user", "hi"), ("assistant", "yo"))), ensure_ascii=False)
    f.write_bytes(good.encode() + b"\n" + b'{"type": "dialogue", "id": "x", "caf\xe9": 1}\n')
    res, v = _validate(f)
    assert res.exit_code == 2
    offset = len(good.encode()) + 1 + len(b'{"type": "dialogue", "id": "x", "caf')
    assert v["rejected_by_reason"] == {f"not UTF-8 text (first bad byte 0xe9 at byte {offset}, line 2)": 1}


def _prepare_cfg(data, model, out, *extra):
    return load_config(PrepareConfig, None, [f"inputs={data}", f"model={model}", f"output_dir={out}",
                                             "progress=false", "block_size=16", "max_seq_len=256", *extra])


def test_empty_split_is_an_error_unless_allowed(tmp_path, micro_model_dir):
    data = write_mixed(tmp_path / "data")
    with pytest.raises(CharopsError, match=r"sft validation split is empty \(40 dialogues.*--allow-empty-split"):
        run(_prepare_cfg(data, micro_model_dir, tmp_path / "ds", "validation_fraction=0.01"))
    assert not (tmp_path / "ds").exists()
    manifest = run(_prepare_cfg(data, micro_model_dir, tmp_path / "ds", "validation_fraction=0.01",
                                "allow_empty_split=true"))
    assert manifest["warnings"] == [
        "sft validation split is empty (40 dialogues in all, validation_fraction 0.01, split_by dialogue)",
        "dpo validation split is empty (6 preference pairs in all, validation_fraction 0.01, split_by dialogue)"]
    # No validation wanted at all: nothing to warn about.
    manifest = run(_prepare_cfg(data, micro_model_dir, tmp_path / "ds2", "validation_fraction=0"))
    assert manifest["warnings"] == []
    res = runner.invoke(app, ["data", "prepare", str(data), "--model", str(micro_model_dir), "--out",
                              str(tmp_path / "ds3"), "validation_fraction=0.01", "max_seq_len=256", "-q"])
    assert_one_line_error(res, "sft validation split is empty", "--allow-empty-split")


def test_train_on_a_tiny_raw_file_gives_advice_the_train_command_can_follow(tmp_path, micro_model_dir):
    """`charops train` prepares a raw file itself and has no --allow-empty-split: its error says
    how to get there with `charops data prepare` instead (issue 7)."""
    raw = tmp_path / "tiny.jsonl"
    rows = [{"type": "profile", "name": "Ava", "language": "en"},
            _dialogue(1, "Ava", _turns(("user", "hi"), ("assistant", "(waves) hi!")))]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    res = runner.invoke(app, ["train", "sft", f"model={micro_model_dir}", f"dataset={raw}",
                              f"output_dir={tmp_path / 'run'}", "max_steps=1"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    line = res.stderr.strip().splitlines()[-1]  # after the prepare step's progress bar
    for words in ("error: dataset", "sft validation split is empty", str(raw), "charops data prepare",
                  "--allow-empty-split", "dataset=DIR"):
        assert words in line, line
    # The flag it names belongs to the command it names: train does not take it.
    assert "charops data prepare" in line.split("--allow-empty-split")[0]
    assert "--allow-empty-split" not in runner.invoke(app, ["train", "sft", "--help"]).stdout
    assert "--allow-empty-split" in runner.invoke(app, ["data", "prepare", "--help"]).stdout
    assert not (tmp_path / "run" / "model").exists()


def test_max_seq_len_above_the_model_limit_fails_before_tokenizing(tmp_path, micro_model_dir, monkeypatch):
    import charops.data.prepare as prepare

    limit = json.loads((micro_model_dir / "config.json").read_text())["max_position_embeddings"]
    data = write_mixed(tmp_path / "data")
    monkeypatch.setattr(prepare, "_Builder", None)  # tokenizing now would be a TypeError
    with pytest.raises(CharopsError, match=rf"max_seq_len {limit + 1} is above .* position limit {limit}"):
        run(_prepare_cfg(data, micro_model_dir, tmp_path / "ds", f"max_seq_len={limit + 1}"))


def test_holdout_characters_naming_nobody(tmp_path, micro_model_dir):
    data = write_mixed(tmp_path / "data")
    with pytest.raises(CharopsError) as exc:
        run(_prepare_cfg(data, micro_model_dir, tmp_path / "ds", "split_by=character",
                         "holdout_characters=[小明,Bob,小红]"))
    msg = str(exc.value)
    assert "holdout_characters" in msg and "'Bob'" in msg and "'小红'" in msg and "'小明'" not in msg
    assert "Ava" in msg  # the characters there are, to pick from


def test_record_over_the_byte_limit_is_rejected_before_parsing(tmp_path, micro_model_dir):
    data = write_mixed(tmp_path / "data")
    huge = json.dumps(_dialogue("huge", "Ava", _turns(("user", "hi"), ("assistant", "x" * 300_000))))
    with open(data / "data.jsonl", "a", encoding="utf-8") as fh:
        fh.write(huge + "\n")
    res, v = _validate(data, "--max-record-bytes", 100_000)
    assert v["rejected_by_reason"]["record over max_record_bytes (100000 bytes)"] == 1
    manifest = run(_prepare_cfg(data, micro_model_dir, tmp_path / "ds", "max_record_bytes=100000",
                                "validation_fraction=0.25"))
    assert manifest["counts"]["rejected_by_reason"]["record over max_record_bytes (100000 bytes)"] == 1


# --- CLI consistency ---------------------------------------------------------------------------

def test_debug_keeps_the_exit_code(tmp_path):
    res = runner.invoke(app, ["--debug", "data", "validate", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2
    assert "Traceback" in res.output and "no such file or directory" in res.output


def test_compile_with_no_names_prints_help(tmp_path):
    res = runner.invoke(app, ["compile"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output and "--all" in res.output
    assert not any(Path("pipelines").glob("*.yaml.tmp"))


@pytest.mark.parametrize("cmd", [["model", "init"], ["data", "validate"], ["store", "put"], ["store", "get"],
                                 ["train", "sft"], ["data", "prepare"], ["compile"], ["runs", "wait"]])
def test_summary_commands_take_quiet_and_json(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0
    assert "--json" in res.output and "-q, --quiet" in res.output, cmd


def test_model_init_quiet_and_json(tmp_path, micro_corpus):
    base = ["model", "init", "--config", "micro", f"corpus={micro_corpus}"]
    res = runner.invoke(app, [*base, "--output", str(tmp_path / "a"), "-q"])
    # (deepspeed, when transformers first imports it, logs a line on stdout: not charops' to silence)
    assert res.exit_code == 0 and "wrote" not in res.stdout and "parameters" not in res.stdout, res.output
    assert (tmp_path / "a" / "config.json").is_file()
    res = runner.invoke(app, [*base, "--output", str(tmp_path / "b"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["output_dir"] == str(tmp_path / "b")
