"""Multi-GPU training through torchrun: 2+ processes when the machine has 2+ GPUs (else 1).

    .venv/bin/python -m pytest tests/gpu/test_multi_gpu.py -x -q -m gpu

Each rank runs ``python -m charops.train.sft`` under DeepSpeed ZeRO-2 with bf16; the run must end
with one model directory, a summary reporting every rank, and token totals summed over ranks
(the global batch is world_size times a single GPU's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from charops.train import launch  # noqa: E402 (after the skip: no torch, no module)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("deepspeed", ["zero2", "zero3"])
def test_torchrun_sft(tmp_path, micro_model_dir, train_dataset_dir, deepspeed):
    nproc = min(torch.cuda.device_count(), 4) if torch.cuda.device_count() >= 2 else 1
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={launch.free_port()}",
           "-m", "charops.train.sft", "--config", "tiny-cpu", f"model={micro_model_dir}",
           f"dataset={train_dataset_dir}", f"output_dir={out}", "max_steps=4", "save_steps=2",
           "per_device_train_batch_size=2", "packing=false", "bf16=true", f"deepspeed={deepspeed}", "evaluate=false"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == nproc
    assert summary["deepspeed"]["zero_stage"] == int(deepspeed[-1])
    assert summary["steps"] == 4 and len(summary["loss_curve"]) == 4
    assert all(e["loss"] == e["loss"] and e["loss"] > 0 for e in summary["loss_curve"])  # finite, positive
    # Every rank's micro-batches are counted: at most 2 dialogues per rank per step.
    per_step = [b["supervised_tokens"] - a["supervised_tokens"]
                for a, b in zip(summary["loss_curve"], summary["loss_curve"][1:], strict=False)]
    assert all(s > 0 for s in per_step)
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "model")
