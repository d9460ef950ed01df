"""charops.train.launch for real: every stage under torchrun with 1 and 2 processes on this CPU,
and a TrainJob node.

    .venv/bin/python -m pytest tests/unit/test_train_launch.py -x -q
    .venv/bin/python -m pytest tests/unit/test_train_launch.py -x -q -m slow   # the torchrun runs

Two CPU ranks stand in for two GPUs (gloo instead of NCCL, same launcher and code path); the
rendezvous store and gloo's sockets stay on loopback.
The node test runs exactly what a TrainJob node runs (``python -m charops.train.launch node``)
with the rendezvous variables Kubeflow Trainer would set for a one-node job, against a real S3
store: fetch the inputs, torchrun the stage, publish the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from charops.config import load_config, to_dict
from charops.errors import ConfigError
from charops.train import launch
from charops.train.stages import STAGES


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, micro_model_dir):
    """train_records() prepared for the micro model (short sequences: its 512 positions)."""
    from conftest import train_records

    from charops.data.prepare import PrepareConfig, run
    from charops.io import write_jsonl

    base = tmp_path_factory.mktemp("launch_data")
    write_jsonl(base / "records.jsonl", train_records())
    run(load_config(PrepareConfig, None, [f"inputs={base / 'records.jsonl'}", f"model={micro_model_dir}",
                                          f"output_dir={base / 'data'}", "block_size=32", "max_seq_len=256",
                                          "validation_fraction=0.3", "allow_empty_split=true", "progress=false"]))
    return base / "data"


STEPS = ["max_steps=2", "save_steps=2", "per_device_train_batch_size=1", "packing=false",
         "evaluate=false"]


def kto_export(out) -> str:
    """A feedback export in KTO form (kto/train.jsonl: liked and disliked replies)."""
    from charops.feedback import export as fx
    from charops.feedback.events import check_event

    events = [check_event({
        "id": f"vote-{i:04d}", "at": "2026-12-04T10:00:00Z", "model": {"name": "m"},
        "conversation": f"c{i}", "turn": 0, "messages": [{"role": "user", "content": f"你好{i}"}],
        "candidates": [{"text": f"（微笑）你好{i}", "position": 0}, {"text": f"嗯{i}。", "position": 1}],
        "action": {"kind": "vote", "winner": "a"}}) for i in range(4)]
    splits, summary = fx.export_rows(events, "kto", validation_fraction=0.0)
    return str(fx.write_export(splits, summary, out))


def one_step_config(name: str, tmp_path, model_dir, dataset_dir):
    """``name``'s tiny-cpu preset cut to one optimizer step of one row on the micro model (two
    rows for KTO, whose KL term pairs a prompt with another row's reply, on a feedback export)."""
    stage = STAGES[name]
    if name == "kto":
        dataset_dir = kto_export(tmp_path / "kto_export")
    paths = [f"model={model_dir}", f"dataset={dataset_dir}", f"output_dir={tmp_path / name}"]
    if "ref_model" in stage.config.__dataclass_fields__:  # DPO: against the model it starts from
        paths.append(f"ref_model={model_dir}")
    return load_config(stage.config, "tiny-cpu", [*paths, "max_steps=1", "save_steps=1",
                                                 f"per_device_train_batch_size={2 if name == 'kto' else 1}", "evaluate=false",
                                                 "max_seq_len=256", "progress=false"])


def test_every_stage_has_a_torchrun_command_line():
    """Each stage's module is what torchrun starts; an unknown stage is a one-line error.

    The reward stage was missing here, so a reward step on a pod with 2 GPUs raised KeyError."""
    for name, stage in STAGES.items():
        cmd = launch.torchrun_command(name, 2, ["--config", "c.yaml"], local=True)
        assert cmd[-4:] == ["-m", f"charops.train.{name}", "--config", "c.yaml"]
        assert stage.config.stage == name  # its presets are configs/<name>/
    with pytest.raises(ConfigError, match="no training stage 'rl' .known: pretrain, sft, dpo, reward"):
        launch.torchrun_command("rl", 2, [], local=True)


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_trains_under_torchrun(name, nproc, tmp_path, micro_model_dir, dataset_dir):
    """The command line a multi-GPU step runs (``launch.run_stage``), for every stage, on 1 and 2 ranks."""
    cfg = one_step_config(name, tmp_path, micro_model_dir, dataset_dir)
    config = tmp_path / "launch_config.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg), allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(launch.torchrun_command(name, nproc, ["--config", str(config)], local=True),
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / name / "training_summary.json").read_text())
    assert summary["stage"] == name and summary["steps"] == 1
    assert summary["world_size"] == nproc  # every rank took part
    assert (tmp_path / name / "model" / "config.json").is_file()


@pytest.mark.slow
def test_run_stage_on_two_processes(tmp_path, micro_model_dir, dataset_dir, monkeypatch):
    from charops.train.sft import SFTConfig, run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = load_config(SFTConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={dataset_dir}",
                                             f"output_dir={tmp_path / 'run'}", *STEPS])
    summary = launch.run_stage("sft", cfg, run, 2)
    assert summary["world_size"] == 2  # both ranks took part
    assert summary["steps"] == 2
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_run_stage_reports_a_failed_launch(tmp_path, monkeypatch):
    """A rank that exits non-zero is a LaunchError naming the exit code (no torchrun needed)."""
    from charops.train.sft import SFTConfig

    monkeypatch.setattr(launch, "torchrun_command", lambda *a, **k: [sys.executable, "-c", "raise SystemExit(3)"])
    cfg = load_config(SFTConfig, "tiny-cpu", ["model=/m", "dataset=/d", f"output_dir={tmp_path}"])
    with pytest.raises(launch.LaunchError, match="under torchrun on 2 processes exited with 3"):
        launch.run_stage("sft", cfg, lambda c: pytest.fail("ran in-process"), 2)
    assert launch.run_stage("sft", cfg, lambda c: {"in_process": True}, 1) == {"in_process": True}


@pytest.mark.slow
def test_trainjob_node_fetches_trains_and_publishes(tmp_path, micro_model_dir, dataset_dir,
                                                    s3_server, s3_bucket):
    from charops.storage import open_store

    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3_server["access_key"],
           "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"], "CHAROPS_S3_ENDPOINT": s3_server["url"],
           "OMP_NUM_THREADS": "1",
           # What Kubeflow Trainer's torch policy sets on each node (here: one node).
           "PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1",
           "PET_MASTER_PORT": str(launch.free_port())}
    store = open_store(f"s3://{s3_bucket}", env=env)
    store.put_dir(micro_model_dir, "base")
    store.put_dir(dataset_dir, "data")
    out = f"s3://{s3_bucket}/trainjobs/j1/model"
    cmd = [sys.executable, "-m", "charops.train.launch", "node", "--stage", "sft",
           "--model", f"s3://{s3_bucket}/base", "--dataset", f"s3://{s3_bucket}/data",
           "--output", out, "--nproc-per-node", "2", "--config", "tiny-cpu", "--", *STEPS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "published" in proc.stdout
    store.download_prefix("trainjobs/j1/model", tmp_path / "got")
    summary = json.loads((tmp_path / "got" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    # The published model is the trained one, loadable, with the dataset's characters.
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "got").config.model_type == "qwen2"
    assert (tmp_path / "got" / "characters.jsonl").is_file()
