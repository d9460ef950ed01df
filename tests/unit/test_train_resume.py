"""Crash and resume: a run killed (SIGKILL) after a checkpoint, rerun with resume=auto, ends
exactly where an uninterrupted run does (same steps, same loss at every step, same weights).

    .venv/bin/python -m pytest tests/unit/test_train_resume.py -x -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from charops.config import load_config

STEPS, SAVE, KILL_AT = 8, 2, 4

CRASHING_RUN = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from charops.config import load_config
    from charops.train.sft import SFTConfig, run

    class Crash(TrainerCallback):
        # on_save runs once checkpoint-N is completely written: die there, as a node would.
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == int(sys.argv[1]):
                os.kill(os.getpid(), signal.SIGKILL)

    run(load_config(SFTConfig, "tiny-cpu", sys.argv[2:]), callbacks=[Crash()])
""")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_end(tmp_path, micro_model_dir, train_dataset_dir):
    from safetensors.torch import load_file

    from charops.train.sft import SFTConfig, run

    common = [f"model={micro_model_dir}", f"dataset={train_dataset_dir}", f"max_steps={STEPS}",
              f"save_steps={SAVE}", "save_total_limit=null", "per_device_train_batch_size=2", "packing=false",
              "learning_rate=3e-3", "evaluate=false"]
    # 6 dialogues, 2 per step: the data is reshuffled every 3 steps, so data order and RNG state matter.
    reference = run(load_config(SFTConfig, "tiny-cpu", [*common, f"output_dir={tmp_path / 'straight'}"]))

    crashed = tmp_path / "crashed"
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(KILL_AT), *common, f"output_dir={crashed}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (crashed / "training_summary.json").exists()
    assert (crashed / "checkpoints" / f"checkpoint-{KILL_AT}").is_dir()
    assert not (crashed / "checkpoints" / f"checkpoint-{KILL_AT + SAVE}").exists()

    resumed = run(load_config(SFTConfig, "tiny-cpu", [*common, f"output_dir={crashed}", "resume=auto"]))
    assert resumed["resumed_from"].endswith(f"checkpoint-{KILL_AT}")
    assert resumed["steps"] == reference["steps"] == STEPS
    steps = [e["step"] for e in resumed["loss_curve"]]
    assert steps == list(range(1, STEPS + 1))
    losses = torch.tensor([e["loss"] for e in resumed["loss_curve"]])
    expected = torch.tensor([e["loss"] for e in reference["loss_curve"]])
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(losses[KILL_AT:], losses[KILL_AT - 1])  # it really kept training
    assert resumed["tokens_seen"] == reference["tokens_seen"]
    assert resumed["supervised_tokens"] == reference["supervised_tokens"]
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(crashed / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    on_disk = json.loads((crashed / "training_summary.json").read_text())
    assert on_disk["steps"] == STEPS
