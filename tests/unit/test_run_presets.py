"""Run presets (configs/run/*.yaml, ``charops submit --preset``) and the stage presets they name.

    .venv/bin/python -m pytest tests/unit/test_run_presets.py -x -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from charops.config import list_presets, load_config, read_yaml
from charops.errors import CharopsError
from charops.pipeline.presets import preset_path, with_preset
from charops.pipeline.spec import load_spec, parse_params

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT / "pipelines" / "full.yaml"


def _config_classes():
    from charops.data.prepare import PrepareConfig
    from charops.eval.run import EvalConfig
    from charops.train.dpo import DPOConfig
    from charops.train.pretrain import PretrainConfig
    from charops.train.sft import SFTConfig

    return {"data_config": PrepareConfig, "pretrain_config": PretrainConfig, "sft_config": SFTConfig,
            "dpo_config": DPOConfig, "eval_config": EvalConfig}


def test_param_wins_over_the_preset_and_unknown_parameters_are_left_out():
    items = with_preset("smollm2-cpu", ["sft_config=tiny-cpu", 'sft_overrides=["max_steps=2"]'])
    assert items.count("sft_config=tiny-cpu") == 1 and "sft_config=smollm2-cpu" not in items
    assert "base_model=charops:smollm2-135m" in items
    assert items[-2:] == ["sft_config=tiny-cpu", 'sft_overrides=["max_steps=2"]']
    trimmed = with_preset("smollm2-cpu", [], known={"base_model", "sft_config"})
    assert sorted(trimmed) == ["base_model=charops:smollm2-135m", "sft_config=smollm2-cpu"]
    assert with_preset(None, ["a=1"]) == ["a=1"]


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(CharopsError, match="no run preset 'smolm2'.*smollm2-cpu"):
        preset_path("smolm2")


@pytest.mark.parametrize("name", list_presets("run"))
def test_every_run_preset_fits_the_full_pipeline_and_names_loadable_stage_presets(name):
    spec = load_spec(FULL)
    values = parse_params(spec, with_preset(name, []), check_required=False)
    assert set(read_yaml(preset_path(name))) <= set(spec.parameters)
    for param, cls in _config_classes().items():
        if param in values:
            load_config(cls, values[param])  # unknown keys or bad values raise


def test_smollm2_stage_presets_chain_and_use_the_catalog_model():
    classes = _config_classes()
    data = load_config(classes["data_config"], "smollm2-cpu")
    pre = load_config(classes["pretrain_config"], "smollm2-cpu")
    sft = load_config(classes["sft_config"], "smollm2-cpu")
    dpo = load_config(classes["dpo_config"], "smollm2-cpu")
    ev = load_config(classes["eval_config"], "smollm2-cpu")
    assert data.model == pre.model == ev.baseline_model == "charops:smollm2-135m"
    assert pre.dataset == sft.dataset == dpo.dataset == ev.dataset == data.output_dir
    assert sft.model == f"{pre.output_dir}/model" and dpo.model == dpo.ref_model == f"{sft.output_dir}/model"
    assert ev.model == f"{dpo.output_dir}/model"
    assert pre.lora.enabled and sft.lora.enabled and dpo.lora.enabled  # LoRA on CPU
    for stage, cls in (("pretrain", "pretrain_config"), ("sft", "sft_config"), ("dpo", "dpo_config")):
        gpu = load_config(classes[cls], "smollm2-gpu")
        assert not gpu.lora.enabled and gpu.bf16, stage  # full fine-tuning on GPU


def test_submit_with_an_unknown_preset_is_a_one_line_error():
    from charops.cli.main import app

    r = CliRunner().invoke(app, ["submit", str(FULL), "--local", "--preset", "nope"])
    assert r.exit_code == 2 and "no run preset 'nope'" in r.output
