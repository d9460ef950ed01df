"""charops.train.launch for real: torchrun with 2 processes on this CPU, and a TrainJob node.

    .venv/bin/python -m pytest tests/unit/test_train_launch.py -x -q

Two CPU ranks stand in for two GPUs (gloo instead of NCCL, same launcher and code path).
The node test runs exactly what a TrainJob node runs (``python -m charops.train.launch node``)
with the rendezvous variables Kubeflow Trainer would set for a one-node job, against a real S3
store: fetch the inputs, torchrun the stage, publish the model.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from charops.config import load_config
from charops.train import launch


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
           "PET_MASTER_PORT": str(_port())}
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
    dest = store.download_prefix("trainjobs/j1/model", tmp_path / "got")
    summary = json.loads((tmp_path / "got" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert dest is not None
