"""One stage through DeepSpeed ZeRO-2 on this CPU, single process, rendezvous on a file (loopback only).

The first run on a machine JIT-compiles DeepSpeed's CPU communication op (~60 s) into
TORCH_EXTENSIONS_DIR (default here: .cache/torch_extensions); later runs take seconds.

    .venv/bin/python -m pytest tests/unit/test_train_deepspeed.py -x -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charops.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sft_under_zero2_matches_plain_training(tmp_path, micro_model_dir, train_dataset_dir):
    from charops.train.sft import SFTConfig, run

    common = [f"model={micro_model_dir}", f"dataset={train_dataset_dir}", "max_steps=3", "warmup_ratio=0",
              "per_device_train_batch_size=64", "learning_rate=3e-3", "evaluate=false"]
    plain = run(load_config(SFTConfig, "tiny-cpu", [*common, f"output_dir={tmp_path / 'plain'}"]))

    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "zero2"
    proc = subprocess.run([sys.executable, "-m", "charops.train.sft", "--config", "tiny-cpu", *common,
                           f"output_dir={out}", "deepspeed=zero2"],
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ds = json.loads((out / "training_summary.json").read_text())
    assert ds["deepspeed"] == {"config": "zero2", "zero_stage": 2}
    assert ds["world_size"] == 1 and ds["steps"] == 3
    # Same data, same initial weights, same optimizer (the Trainer's AdamW under ZeRO-2): same losses.
    torch.testing.assert_close(torch.tensor([e["loss"] for e in ds["loss_curve"]]),
                               torch.tensor([e["loss"] for e in plain["loss_curve"]]), rtol=1e-4, atol=1e-5)
    assert (out / "model" / "model.safetensors").is_file()
    assert not list(out.glob(".dist_init.*"))  # the rendezvous file is gone
