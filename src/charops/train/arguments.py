"""What a stage's Trainer is built from: its arguments, the model, tokenizer and LoRA, the checkpoint.

Public names::

    from charops.train import arguments
    resume_from = arguments.checkpoint_to_resume(cfg)    # resume=auto -> newest checkpoint or None
    arguments.prepare_run_dir(cfg, resume_from)          # a fresh run starts without old checkpoints
    args = arguments.training_arguments(cfg, max_length=cfg.max_seq_len)  # trl.RewardConfig for reward
    tokenizer = arguments.load_tokenizer(inputs.model_dir)
    model = arguments.load_model(inputs.model_dir, cfg, args.bf16)
    peft = arguments.peft_config(cfg)                    # None when LoRA is off

``training_arguments`` gives every stage the same arguments, of the class its entry in
``charops.train.stages.STAGES`` names (``TrainingArguments`` or a TRL config): checkpoints
under ``output_dir/checkpoints``, a log entry every step, CPU without CUDA, bf16 on GPUs (and,
when asked, on CPUs with bfloat16 instructions), a DeepSpeed JSON from
``configs/deepspeed/<name>.json``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from charops.errors import ConfigError
from charops.model.load import cpu_bf16_supported
from charops.model.load import load_tokenizer as load_tokenizer  # the one loader (pad fallback)
from charops.train.config import CHECKPOINTS, SUMMARY, TrainConfig, deepspeed_config_path
from charops.train.stages import STAGES


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def setup_single_process_distributed(run_dir: Path) -> None:
    """DeepSpeed without a launcher: one rank, rendezvous through a file (nothing listens on a port).

    DeepSpeed wants a process group even for one process; torch's env:// rendezvous would open a
    TCP store on all interfaces, a file:// one keeps it on this machine.
    """
    if "LOCAL_RANK" in os.environ:  # torchrun/deepspeed launched us: they own the rendezvous
        return
    import deepspeed

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's own listening socket: loopback too
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, init_file = tempfile.mkstemp(prefix=".dist_init.", dir=run_dir)
    os.close(fd)
    os.unlink(init_file)  # the file store creates it
    atexit.register(lambda: Path(init_file).unlink(missing_ok=True))
    deepspeed.init_distributed(dist_backend="nccl" if cuda_available() else "gloo", auto_mpi_discovery=False,
                               init_method=f"file://{init_file}", rank=0, world_size=1, verbose=False)


def training_arguments(cfg: TrainConfig, **stage_kwargs: Any):
    """The Trainer arguments for ``cfg``, of its stage's class (``STAGES[cfg.stage].arguments``).

    Build this before loading the model: with ZeRO-3 it makes ``from_pretrained`` load the weights
    already partitioned across ranks.
    """
    run_dir = Path(cfg.output_dir)
    gpu = cuda_available()
    if cfg.deepspeed is not None:
        setup_single_process_distributed(run_dir)
    bf16 = resolve_bf16(cfg.bf16, gpu, cfg.deepspeed)
    return STAGES[cfg.stage].arguments(
        output_dir=str(run_dir / CHECKPOINTS),
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=1,  # the loss curve in training_summary.json has every step
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        # DeepSpeed on CPU runs through its own (gloo) process group; use_cpu would bypass it.
        use_cpu=not gpu and cfg.deepspeed is None,
        bf16=bf16,
        fp16=False,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 name; gradient_checkpointing is its deprecated alias
        deepspeed=str(deepspeed_config_path(cfg.deepspeed)) if cfg.deepspeed else None,
        dataloader_num_workers=0,
        **stage_kwargs,
    )


def resolve_bf16(bf16: bool | None, gpu: bool, deepspeed: str | None) -> bool:
    """Whether to train in bfloat16 mixed precision.

    GPU: ``bf16`` as asked (null: when the GPU supports it). CPU: ``bf16=true`` is autocast to
    bfloat16 (the Trainer's ``use_cpu`` + ``bf16``) when the CPU has bfloat16 dot-product
    instructions; without them (oneDNN would emulate them, slower than float32) it trains in
    float32 and says so in one line. null on a CPU is float32.
    """
    if gpu:
        import torch

        return bool(bf16) if bf16 is not None else torch.cuda.is_bf16_supported()
    if not bf16:
        return False
    if deepspeed is not None:
        raise ConfigError("bf16: DeepSpeed on a CPU runs in float32 here; set bf16=false or use a GPU")
    if not cpu_bf16_supported():
        if int(os.environ.get("RANK", "0")) == 0:
            print("note: bf16: this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16); "
                  "training in float32", file=sys.stderr, flush=True)
        return False
    return True


def load_model(model_dir: Path, cfg: TrainConfig, bf16: bool):
    """The causal LM, in bf16 when training in bf16 with DeepSpeed (it keeps fp32 master weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16 and cfg.deepspeed else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=cfg.attn_implementation)
    return model


def peft_config(cfg: TrainConfig):
    """peft.LoraConfig from ``cfg.lora``, or None when LoRA is off."""
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")


def checkpoint_to_resume(cfg: TrainConfig) -> str | None:
    """The checkpoint ``resume`` asks for: auto -> newest under output_dir/checkpoints (or none)."""
    if cfg.resume == "never":
        return None
    if cfg.resume != "auto":
        return cfg.resume
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(cfg.output_dir) / CHECKPOINTS
    return get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None


def prepare_run_dir(cfg: TrainConfig, resume_from: str | None) -> None:
    """A fresh run (no resume) starts from an empty checkpoints folder and no stale summary."""
    run_dir = Path(cfg.output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output_dir '{run_dir}' exists and is not a directory")
    (run_dir / SUMMARY).unlink(missing_ok=True)
    if resume_from is None:
        shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
