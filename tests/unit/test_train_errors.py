"""Bad input to the training stages: a clear one-line error before any work starts.

    .venv/bin/python -m pytest tests/unit/test_train_errors.py -x -q
"""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from charops.config import load_config
from charops.errors import CharopsError, ConfigError, DataError


def _cfg(cls, tmp_path, *overrides):
    return load_config(cls, "tiny-cpu", [f"output_dir={tmp_path / 'run'}", *overrides])


def test_dataset_tokenized_with_another_tokenizer(tmp_path, micro_model_dir, train_dataset_dir):
    from charops.model import tokenizer_sha256
    from charops.train.sft import SFTConfig, run

    other = tmp_path / "other_model"
    shutil.copytree(micro_model_dir, other)
    with open(other / "chat_template.jinja", "a", encoding="utf-8") as fh:
        fh.write(" ")  # a different template supervises different tokens: a different tokenizer
    with pytest.raises(DataError) as exc:
        run(_cfg(SFTConfig, tmp_path, f"model={other}", f"dataset={train_dataset_dir}"))
    msg = str(exc.value)
    assert tokenizer_sha256(other)[:12] in msg and tokenizer_sha256(micro_model_dir)[:12] in msg
    assert "re-run `charops data prepare` with this model" in msg and "\n" not in msg
    assert not (tmp_path / "run").exists()  # nothing started


def test_missing_base_model(tmp_path, train_dataset_dir):
    from charops.train.pretrain import PretrainConfig, run

    with pytest.raises(CharopsError, match=r"base model '.*nope' does not exist"):
        run(_cfg(PretrainConfig, tmp_path, f"model={tmp_path / 'nope'}", f"dataset={train_dataset_dir}"))
    assert not (tmp_path / "run").exists()


def test_missing_dataset(tmp_path, micro_model_dir):
    from charops.train.sft import SFTConfig, run

    with pytest.raises(DataError, match=r"dataset '.*missing' does not exist"):
        run(_cfg(SFTConfig, tmp_path, f"model={micro_model_dir}", f"dataset={tmp_path / 'missing'}"))


def test_unknown_config_key(tmp_path):
    from charops.train.sft import SFTConfig

    with pytest.raises(ConfigError, match="unknown key 'lerning_rate'; did you mean 'learning_rate'"):
        _cfg(SFTConfig, tmp_path, "lerning_rate=1e-3")
    with pytest.raises(ConfigError, match="unknown key 'rank'"):
        _cfg(SFTConfig, tmp_path, "lora.rank=8")


def test_dpo_without_reference(tmp_path):
    from charops.train.dpo import DPOConfig

    with pytest.raises(ConfigError, match="ref_model is required"):
        _cfg(DPOConfig, tmp_path, "ref_model=null")


def test_unknown_deepspeed_config_and_bad_resume(tmp_path):
    from charops.train.pretrain import PretrainConfig

    with pytest.raises(ConfigError, match="no config named 'zero9'.*zero2, zero3, zero3_offload"):
        _cfg(PretrainConfig, tmp_path, "deepspeed=zero9")
    with pytest.raises(ConfigError, match="resume: 'later' is neither auto, never nor an existing checkpoint"):
        _cfg(PretrainConfig, tmp_path, "resume=later")


def test_cli_shows_one_line_errors(tmp_path, micro_model_dir, train_dataset_dir):
    from charops.cli.main import app

    runner = CliRunner()
    cases = [
        (["train", "dpo", "ref_model=null"], "ref_model is required"),
        (["train", "sft", "lerning_rate=1"], "unknown key 'lerning_rate'"),
        (["train", "pretrain", f"model={tmp_path / 'nope'}", f"dataset={train_dataset_dir}",
          f"output_dir={tmp_path / 'run'}"], "does not exist"),
    ]
    for argv, expected in cases:
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and expected in lines[0], result.output
        assert "Traceback" not in result.output


def test_presets_load(tmp_path):
    from charops.train.dpo import DPOConfig
    from charops.train.pretrain import PretrainConfig
    from charops.train.sft import SFTConfig

    for cls in (PretrainConfig, SFTConfig, DPOConfig):
        tiny = load_config(cls, "tiny-cpu")
        assert tiny.deepspeed is None and tiny.bf16 is False
        big = load_config(cls, "qwen2-7b-zero3")
        assert big.deepspeed == "zero3" and big.bf16 is True and big.gradient_checkpointing is True
    assert load_config(DPOConfig, "tiny-cpu").ref_model == "runs/sft/model"


def test_every_config_field_has_help():
    import dataclasses

    from charops.train.config import LoraSettings
    from charops.train.dpo import DPOConfig
    from charops.train.pretrain import PretrainConfig
    from charops.train.sft import SFTConfig

    for cls in (PretrainConfig, SFTConfig, DPOConfig, LoraSettings):
        missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
        assert not missing, f"{cls.__name__}: {missing}"
    assert (PretrainConfig.stage, SFTConfig.stage, DPOConfig.stage) == ("pretrain", "sft", "dpo")
