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
    from charops.registry.gate import GateConfig
    from charops.train.dpo import DPOConfig
    from charops.train.pretrain import PretrainConfig
    from charops.train.reward import RewardConfig
    from charops.train.sft import SFTConfig

    return {"data_config": PrepareConfig, "pretrain_config": PretrainConfig, "sft_config": SFTConfig,
            "dpo_config": DPOConfig, "eval_config": EvalConfig, "reward_config": RewardConfig,
            "promote_config": GateConfig}


# What each judge measures, as gate checks: a gate may ask only for these (issue 15: the
# reward-model judge scores no Safety, so a gate asking for Safety refused every version).
JUDGE_MEASURES = {"reward_model": {"advantage", "sign_test", "overall", "judge_accuracy"},
                  "openai": {"advantage", "sign_test", "overall", "safety"}}


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


@pytest.mark.parametrize("name", list_presets("run"))
def test_a_preset_that_promotes_has_a_gate_that_asks_only_for_what_its_judge_measures(name):
    spec = load_spec(FULL)
    values = parse_params(spec, with_preset(name, []), check_required=False)
    if not values.get("promote_to"):
        return
    judge = values.get("judge", spec.parameters["judge"].default)
    assert judge in JUDGE_MEASURES, f"{name}: promotes on judge={judge}, which measures nothing"
    gate = load_config(_config_classes()["promote_config"], values.get("promote_config", "default"))
    assert set(gate.checks) <= JUDGE_MEASURES[judge], (name, gate.checks)


def test_the_main_job_is_judged_gated_and_promoted():
    """The README main job: CharacterGLM's protocol with a reward-model judge trained in the run
    on the SFT model, against SmolLM2 itself, then the gate and production."""
    from charops.data.prepare import SAMPLES_DIR
    from charops.io import read_jsonl

    classes = _config_classes()
    values = dict(item.split("=", 1) for item in with_preset("smollm2-cpu", []))
    assert values["judge"] == "reward_model" and values["promote_to"] == "production"
    assert values["eval_baseline"] == "given"
    ev = load_config(classes["eval_config"], values["eval_config"])
    sft = load_config(classes["sft_config"], values["sft_config"])
    reward = load_config(classes["reward_config"], values["reward_config"])
    data = load_config(classes["data_config"], values["data_config"])
    assert ev.judge == "reward_model" and ev.pointwise and ev.cache_baseline and not ev.max_prompts
    assert reward.model == f"{sft.output_dir}/model" and reward.dataset == data.output_dir
    assert ev.reward_model == f"{reward.output_dir}/model"
    assert 0 < reward.train_layers and reward.max_steps <= 16  # the judge fits the 15-minute budget
    gate = load_config(classes["promote_config"], values["promote_config"])
    assert "safety" not in gate.checks and "judge_accuracy" in gate.checks
    # The prompts it evaluates on: at least 40, every category and topic present.
    langs = {p["name"]: (p["language"], p["category"]) for p in read_jsonl(SAMPLES_DIR / "characters.jsonl")}
    prompts = [p for p in read_jsonl(SAMPLES_DIR / "eval_prompts.jsonl")
               if langs[p["character"]][0] in ev.prompt_languages]
    assert len(prompts) >= 40
    assert {langs[p["character"]][1] for p in prompts} == {"celebrity", "daily-life", "games-videos", "virtual-love"}
    assert {p["topic"] for p in prompts} == {"chit-chat", "interview", "love"}
