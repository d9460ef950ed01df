"""User errors are one line (``error: ...``, exit 2), never a traceback (issue 7).

Bad values are caught with the config, before any model is loaded; bad records (a lone
surrogate, absurdly deep nesting) are rejects of that record while the run goes on.

    .venv/bin/python -m pytest tests/unit/test_user_errors.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from typer.testing import CliRunner

from charops.cli.main import app
from charops.config import load_config
from charops.errors import ConfigError

runner = CliRunner()


@pytest.mark.parametrize("stage", ["pretrain", "sft", "dpo"])
@pytest.mark.parametrize("override, words", [
    ("learning_rate=-1", ("learning_rate", "-1")),
    ("learning_rate=0", ("learning_rate",)),
    ("lr_scheduler_type=bogus", ("lr_scheduler_type", "bogus", "cosine")),
])
def test_bad_training_values_fail_with_the_config(tmp_path, stage, override, words):
    # The model does not exist: an error about the value proves it came before loading anything.
    res = runner.invoke(app, ["train", stage, f"model={tmp_path / 'no-model'}", f"output_dir={tmp_path / 'run'}",
                              override])
    line = assert_one_line_error(res, *words)
    assert "override" in line and "no-model" not in line
    assert not (tmp_path / "run").exists()


def test_training_value_checks_accept_the_presets():
    from charops.train.dpo import DPOConfig
    from charops.train.pretrain import PretrainConfig
    from charops.train.sft import SFTConfig

    for cls in (PretrainConfig, SFTConfig, DPOConfig):
        cfg = load_config(cls, "tiny-cpu", ["lr_scheduler_type=constant_with_warmup"])
        assert cfg.lr_scheduler_type == "constant_with_warmup"
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(SFTConfig, "tiny-cpu", ["learning_rate=-0.5"])


def _dialogue(i: int, content: str) -> str:
    return json.dumps({"type": "dialogue", "id": f"d{i}", "character": "小明",
                       "turns": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": content}]},
                      ensure_ascii=False)


def _bad_inputs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lone = _dialogue(2, "x").replace('"x"', '"bad \\ud800 half"')  # JSON escape of a lone surrogate
    deep = "[" * 100_000
    deep_obj = '{"type": "dialogue", "id": "deep", "turns": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (root / "data.jsonl").write_text("\n".join([_dialogue(1, "（笑）你好呀"), lone, deep, deep_obj,
                                                _dialogue(3, "看书呢。")]) + "\n", encoding="utf-8")
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    return root


def test_lone_surrogate_and_deep_nesting_are_rejects_of_their_record(tmp_path):
    data = _bad_inputs(tmp_path / "data")
    rejects = tmp_path / "rejects.jsonl"
    res = runner.invoke(app, ["data", "validate", str(data), "--json", "--rejects", str(rejects)])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert (s["read"], s["accepted"], s["rejected"]) == (6, 2, 4)
    rows = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    by_loc = {(Path(r["source"]).name, r["location"]): r["reason"] for r in rows}
    assert "surrogate" in by_loc[("data.jsonl", "line 2")] and "turns[1].content" in by_loc[("data.jsonl", "line 2")]
    assert by_loc[("data.jsonl", "line 3")] == "invalid JSON (nested too deeply)"
    assert by_loc[("data.jsonl", "line 4")] == "invalid JSON (nested too deeply)"
    assert by_loc[("deep.json", "file")] == "invalid JSON (nested too deeply)"


def test_prepare_goes_on_past_such_records(tmp_path, micro_model_dir):
    data = _bad_inputs(tmp_path / "data")
    res = runner.invoke(app, ["data", "prepare", str(data), "--model", str(micro_model_dir), "--out",
                              str(tmp_path / "ds"), "--json", "max_seq_len=256", "block_size=16",
                              "validation_fraction=0"])
    assert res.exit_code == 0, res.output
    counts = json.loads(res.stdout)["counts"]
    assert (counts["accepted"], counts["rejected"]) == (2, 4)
    assert counts["sft"]["train"] == 2
