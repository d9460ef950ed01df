"""bf16 on a CPU: detected from the CPU's flags, autocast when present, float32 with a note when not;
the same for evaluation's inference dtype (charops.model.load.inference_dtype).

    .venv/bin/python -m pytest tests/unit/test_train_precision.py -x -q
"""

from __future__ import annotations

import pytest
import torch

from charops.config import load_config
from charops.errors import CharopsError, ConfigError
from charops.model import load as model_load
from charops.train import arguments

FLAGS = "processor\t: {n}\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\n"


@pytest.mark.parametrize(("extra", "expected"), [("", False), ("avx512_bf16", True), ("amx_tile amx_bf16", True)])
def test_cpu_bf16_is_read_from_the_flags_of_every_processor(tmp_path, extra, expected):
    info = tmp_path / "cpuinfo"
    info.write_text(FLAGS.format(n=0, extra=extra) + FLAGS.format(n=1, extra=extra))
    assert arguments.cpu_bf16_supported(info) is expected
    assert arguments.cpu_bf16_supported(tmp_path / "missing") is False  # not Linux: float32


def test_bf16_on_a_cpu_without_it_falls_back_to_float32_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(arguments, "cpu_bf16_supported", lambda: False)
    assert arguments.resolve_bf16(True, gpu=False, deepspeed=None) is False
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: bf16:") and "float32" in err
    monkeypatch.setattr(arguments, "cpu_bf16_supported", lambda: True)
    assert arguments.resolve_bf16(True, gpu=False, deepspeed=None) is True
    assert arguments.resolve_bf16(None, gpu=False, deepspeed=None) is False  # null: float32 on a CPU
    assert arguments.resolve_bf16(False, gpu=False, deepspeed=None) is False
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="DeepSpeed on a CPU"):
        arguments.resolve_bf16(True, gpu=False, deepspeed="zero2")


def test_inference_dtype_on_a_cpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model_load._note_no_bf16.cache_clear()
    monkeypatch.setattr(model_load, "cpu_bf16_supported", lambda: True)
    assert model_load.inference_dtype("bfloat16") is torch.bfloat16
    assert model_load.inference_dtype("auto") is torch.float32  # auto: float32 on a CPU
    assert model_load.inference_dtype("float32") is torch.float32
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(model_load, "cpu_bf16_supported", lambda: False)
    assert model_load.inference_dtype("bfloat16") is torch.float32
    assert model_load.inference_dtype("bfloat16") is torch.float32
    err = capsys.readouterr().err  # one note, however many models the stage loads
    assert err.count("\n") == 1 and err.startswith("note: dtype bfloat16:") and "float32" in err
    with pytest.raises(CharopsError, match="dtype: must be one of auto, float32, bfloat16, got 'fp16'"):
        model_load.inference_dtype("fp16")


@pytest.mark.skipif(not arguments.cpu_bf16_supported(), reason="this CPU has no bfloat16 instructions")
def test_sft_step_runs_under_bf16_autocast_on_this_cpu(tmp_path, micro_model_dir, train_dataset_dir):
    """One SFT step with bf16=true: the Trainer autocasts (matmuls in bf16), master weights stay float32."""
    import torch
    from transformers import TrainerCallback

    from charops.train.sft import SFTConfig, run

    seen = {}

    class LogitsDtype(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            def hook(module, inputs, output):
                seen.setdefault("matmul", output.dtype)

            first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
            first_linear.register_forward_hook(hook)

    cfg = load_config(SFTConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={train_dataset_dir}",
                                              f"output_dir={tmp_path / 'run'}", "max_steps=1", "bf16=true",
                                              "evaluate=false", "progress=false"])
    summary = run(cfg, callbacks=[LogitsDtype()])
    assert summary["bf16"] is True and summary["steps"] == 1
    assert seen["matmul"] == torch.bfloat16  # the projections ran under autocast
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in saved.values())  # float32 master weights saved
