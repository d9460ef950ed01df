"""Characters travel with the model: every training stage writes the dataset's characters.jsonl
into its model directory (serving and the model card read ``<model_dir>/characters.jsonl``).

    .venv/bin/python -m pytest tests/unit/test_train_characters.py -x -q
"""

from __future__ import annotations

import shutil

import pytest

from charops.config import load_config
from charops.io import read_jsonl

FAST = ["max_steps=1", "per_device_train_batch_size=2", "evaluate=false", "save_steps=100"]


def _stage(name):
    if name == "pretrain":
        from charops.train.pretrain import PretrainConfig as cls
        from charops.train.pretrain import run
    elif name == "sft":
        from charops.train.sft import SFTConfig as cls
        from charops.train.sft import run
    else:
        from charops.train.dpo import DPOConfig as cls
        from charops.train.dpo import run
    return cls, run


@pytest.mark.parametrize("stage", ["pretrain", "sft", "dpo"])
def test_every_stage_saves_the_datasets_characters(stage, tmp_path, micro_model_dir, train_dataset_dir):
    cls, run = _stage(stage)
    extra = [f"ref_model={micro_model_dir}"] if stage == "dpo" else []
    run(load_config(cls, "tiny-cpu", [*FAST, *extra, f"model={micro_model_dir}", f"dataset={train_dataset_dir}",
                                      f"output_dir={tmp_path / 'run'}"]))
    saved = tmp_path / "run" / "model" / "characters.jsonl"
    assert saved.read_bytes() == (train_dataset_dir / "characters.jsonl").read_bytes()
    assert sorted(p["name"] for p in read_jsonl(saved)) == ["Tom", "小明"]
    assert not (micro_model_dir / "characters.jsonl").exists()  # they came from the dataset


def test_a_dataset_without_characters_keeps_the_base_models(tmp_path, micro_model_dir, train_dataset_dir):
    """A dataset prepared before characters.jsonl existed: the model's own characters stay."""
    cls, run = _stage("pretrain")
    base = tmp_path / "base"
    shutil.copytree(micro_model_dir, base)
    (base / "characters.jsonl").write_text('{"name": "Ada"}\n', encoding="utf-8")
    data = tmp_path / "data"
    shutil.copytree(train_dataset_dir, data)
    (data / "characters.jsonl").unlink()
    run(load_config(cls, "tiny-cpu", [*FAST, f"model={base}", f"dataset={data}", f"output_dir={tmp_path / 'run'}"]))
    assert (tmp_path / "run" / "model" / "characters.jsonl").read_text(encoding="utf-8") == '{"name": "Ada"}\n'

    # Neither has any: no file is made up.
    run(load_config(cls, "tiny-cpu", [*FAST, f"model={micro_model_dir}", f"dataset={data}",
                                      f"output_dir={tmp_path / 'run2'}"]))
    assert (tmp_path / "run2" / "model" / "config.json").is_file()
    assert not (tmp_path / "run2" / "model" / "characters.jsonl").exists()
