"""End to end: `charops submit pipelines/full.yaml --local` on the tiny model and bundled samples.

    .venv/bin/python -m pytest tests/e2e/test_full_pipeline.py -x -q -m e2e

Runs the README's main command through the CLI in a subprocess (fewer training steps than
the defaults, to stay within a few minutes on a 2-core machine), then checks every stage's
artifact, that the final model loads and generates, that its validation loss beats the base
model's, that the registry entry matches the model, and that `eval_only` on the final model
reproduces the full pipeline's evaluation exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAROPS = [sys.executable, "-m", "charops.cli.main"]
# Fewer steps than the tiny-cpu presets: enough for the trained model to beat the random base.
FAST = ['--param', 'pretrain_overrides=["max_steps=15"]',
        '--param', 'sft_overrides=["max_steps=25"]',
        '--param', 'dpo_overrides=["max_steps=8"]',
        '--param', 'eval_overrides=["num_samples=2", "max_new_tokens=16"]']

pytestmark = pytest.mark.e2e


def _charops(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CHAROPS_STORE", None)
    return subprocess.run([*CHAROPS, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[dict, Path]:
    work = tmp_path_factory.mktemp("e2e")
    proc = _charops(["submit", str(ROOT / "pipelines" / "full.yaml"), "--local",
                     "--runs-dir", str(work / "runs"), "--run-name", "e2e", "--json", *FAST],
                    cwd=work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout), work


def test_every_stage_produced_its_artifact(full_run):
    result, work = full_run
    assert result["status"] == "succeeded" and result["pipeline"] == "charops-full"
    out = {task: {k: Path(v) for k, v in o.items()} for task, o in result["outputs"].items()}
    assert (out["base-model"]["model"] / "config.json").is_file()
    manifest = json.loads((out["data-prep"]["dataset"] / "manifest.json").read_text())
    assert manifest["counts"]["sft"]["train"] > 0 and manifest["counts"]["dpo"]["train"] > 0
    for stage, steps in (("pretrain", 15), ("sft", 25), ("dpo", 8)):
        model = out[stage]["trained_model"]
        assert (model / "model.safetensors").is_file(), stage
        summary = json.loads((model / "training_summary.json").read_text())
        assert summary["stage"] == stage and summary["steps"] == steps
        assert out[stage]["report"].read_text().startswith("# ")
        assert result["metadata"][stage]["metrics"]["steps"] == steps
        assert result["metadata"][stage]["trained_model"]["stage"] == stage
    # Each stage trained the previous one's output: the lineage recorded by the stages.
    sft_summary = json.loads((out["sft"]["trained_model"] / "training_summary.json").read_text())
    assert sft_summary["base_model"]["ref"] == str(out["pretrain"]["trained_model"])
    dpo_summary = json.loads((out["dpo"]["trained_model"] / "training_summary.json").read_text())
    assert dpo_summary["base_model"]["ref"] == str(out["sft"]["trained_model"])
    assert dpo_summary["config"]["ref_model"] == str(out["sft"]["trained_model"])
    assert (out["evaluate"]["results"] / "metrics.json").is_file()
    assert "Held-out evaluation" in out["evaluate"]["report"].read_text()
    assert json.loads(out["register"]["entry"].read_text())["version"] == 1
    assert set(result["task_seconds"]) == {"base-model", "data-prep", "pretrain", "sft", "dpo",
                                           "evaluate", "register"}
    assert json.loads((work / "runs" / "e2e" / "run.json").read_text())["status"] == "succeeded"


def test_final_model_loads_generates_and_beats_the_base_model(full_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, _ = full_run
    final = Path(result["outputs"]["dpo"]["trained_model"])
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "你是小柚。"}, {"role": "user", "content": "你好！今天做什么？"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]

    metrics = json.loads((Path(result["outputs"]["evaluate"]["results"]) / "metrics.json").read_text())
    assert metrics["model"]["model"] == str(final)
    assert metrics["baseline"]["model"] == result["outputs"]["base-model"]["model"]
    assert metrics["model"]["loss"] < metrics["baseline"]["loss"]
    headline = result["metadata"]["evaluate"]["metrics"]
    assert headline["loss"] == pytest.approx(metrics["model"]["loss"])
    assert headline["loss_delta"] == pytest.approx(metrics["model"]["loss"] - metrics["baseline"]["loss"])


def test_registered_model_is_the_final_model(full_run):
    from charops.io import sha256_tree
    from charops.pipeline.version import read_version
    from charops.registry import get_entry
    from charops.storage import LocalStore

    result, work = full_run
    store = LocalStore(work / ".charops" / "store")  # the default store, relative to the cwd
    entry = get_entry(store, "charops-chat")
    final = Path(result["outputs"]["dpo"]["trained_model"])
    assert entry["model_sha256"] == sha256_tree(final)
    published = store.download_prefix("models/charops-chat/1/model", work / "published")
    assert sha256_tree(published) == sha256_tree(final)
    assert entry["lineage"]["pipeline_version"] == read_version(ROOT / "pipelines" / "full.yaml")
    manifest = json.loads((Path(result["outputs"]["data-prep"]["dataset"]) / "manifest.json").read_text())
    assert entry["lineage"]["dataset_sha256"] == manifest["content_sha256"]
    assert entry["metrics"]["model.loss"] == pytest.approx(result["metadata"]["evaluate"]["metrics"]["loss"])
    assert result["parameters"]["register"]["model_uri"] == entry["model_uri"]


def test_eval_only_reproduces_the_evaluation(full_run):
    """Same model, same data and eval config: the eval_only pipeline gives the same loss."""
    result, work = full_run
    final = result["outputs"]["dpo"]["trained_model"]
    proc = _charops(["submit", str(ROOT / "pipelines" / "eval_only.yaml"), "--local",
                     "--runs-dir", str(work / "runs"), "--run-name", "eval", "--json",
                     "--param", f"model={final}",
                     "--param", f"baseline_model={result['outputs']['base-model']['model']}",
                     "--param", 'eval_overrides=["num_samples=2", "max_new_tokens=16"]'], cwd=work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = json.loads(proc.stdout)["metadata"]["evaluate"]["metrics"]
    first = result["metadata"]["evaluate"]["metrics"]
    assert again["loss"] == pytest.approx(first["loss"], rel=1e-6)
    assert again["baseline_loss"] == pytest.approx(first["baseline_loss"], rel=1e-6)


def test_unknown_parameter_is_a_one_line_error(tmp_path):
    proc = _charops(["submit", str(ROOT / "pipelines" / "full.yaml"), "--local",
                     "--runs-dir", str(tmp_path / "runs"), "--param", "nope=1"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "has no parameter 'nope'" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_malformed_yaml_and_failing_step_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelineInfo: [unclosed\n")
    proc = _charops(["submit", str(bad), "--local"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1 and "not valid YAML" in proc.stderr

    # A bad override only shows when its step runs: the error names the step and the cause.
    proc = _charops(["submit", str(ROOT / "pipelines" / "sft_dpo.yaml"), "--local",
                     "--runs-dir", str(tmp_path / "runs"), "--param", "model_config=micro",
                     "--param", 'sft_overrides=["max_stepz=1"]'], cwd=tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: pipeline charops-sft-dpo: task 'sft' failed: ConfigError: ")
    assert "unknown key 'max_stepz'; did you mean 'max_steps'?" in last


def test_unreachable_endpoint_is_a_one_line_error(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _charops(["submit", str(ROOT / "pipelines" / "full.yaml"),
                     "--host", f"http://127.0.0.1:{port}"], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(port) in lines[0]
