"""What the three training stages share: config fields, inputs, Trainer arguments, the run record.

Each stage (``pretrain``, ``sft``, ``dpo``) is one module with a config dataclass and a
``run(config)``; this module holds the plumbing they have in common, top to bottom in the order a
run uses it:

1. ``TrainConfig``/``LoraSettings``: the fields every stage has (the stage configs add theirs).
2. ``prepare_inputs``: resolve the base model (local dir, ``s3://``, hub id), the dataset (a
   prepared dataset directory, or a raw file that ``charops.data.prepare`` turns into one under
   ``output_dir/dataset``) and refuse a dataset tokenized with another tokenizer, all before any
   heavy import or work.
3. ``training_arguments``: the ``TrainingArguments`` (or TRL's SFT/DPO config) every stage uses:
   checkpoints under ``output_dir/checkpoints``, a log entry every step, CPU without CUDA, bf16 on
   GPUs, a DeepSpeed JSON from ``configs/deepspeed/<name>.json``.
4. ``RunRecorder``: a TrainerCallback that keeps the running totals (tokens, supervised tokens)
   in the log history, so they survive a checkpoint/resume, and times the run.
5. ``finish``: the final model directory (``output_dir/model``: safetensors, tokenizer, chat
   template; LoRA adapters merged) and ``training_summary.json``, both written atomically.

Run directory layout (``output_dir``)::

    model/                   the trained model (a Hugging Face directory; the next stage's `model`)
    checkpoints/checkpoint-N  Trainer checkpoints (optimizer, scheduler, RNG) for `resume=auto`
    dataset/                 only when `dataset` was a raw file: the prepared dataset
    training_summary.json    also copied into model/

Launch any stage single-process, under ``torchrun`` or under ``deepspeed``::

    python -m charops.train.sft --config tiny-cpu
    torchrun --nproc-per-node 8 -m charops.train.sft --config qwen2-7b-zero3
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from transformers import PrinterCallback, TrainerCallback

from charops.config import load_config, preset_dir, stage_main, to_dict
from charops.errors import CharopsError, ConfigError, DataError
from charops.io import atomic_dir, read_jsonl, sha256_file, write_json

CHECKPOINTS = "checkpoints"
MODEL = "model"
SUMMARY = "training_summary.json"


# --- 1. config --------------------------------------------------------------------------------


@dataclass
class LoraSettings:
    """Low-rank adapters (peft). The final model directory holds the merged weights."""

    enabled: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    r: int = field(default=16, metadata={"help": "Rank of the adapter matrices."})
    alpha: int = field(default=32, metadata={"help": "Scaling numerator: the update is scaled by alpha / r."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapter input."})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Names of the linear layers that get adapters (Llama/Qwen2 names by default)."})


@dataclass
class TrainConfig:
    """Fields every training stage has; PretrainConfig, SFTConfig and DPOConfig add their own."""

    stage: ClassVar[str] = ""
    # Which split of the prepared dataset directory the stage reads (pretrain/, sft/ or dpo/).
    split_dir: ClassVar[str] = ""

    model: str = field(default="runs/base", metadata={
        "help": "Base model: a Hugging Face model directory, an s3://bucket/prefix or a hub id."})
    dataset: str = field(default="runs/data", metadata={
        "help": "Prepared dataset directory (charops data prepare), or a raw data file that is prepared "
                "first into output_dir/dataset with the base model's tokenizer."})
    output_dir: str = field(default="runs/train", metadata={
        "help": "Run directory: model/ (the trained model), checkpoints/, training_summary.json."})
    max_steps: int = field(default=-1, metadata={
        "help": "Optimizer steps to run; -1 means num_train_epochs passes over the data."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the data when max_steps is -1."})
    per_device_train_batch_size: int = field(default=8, metadata={
        "help": "Sequences (packed rows when packing) per device per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler_type: str = field(default="cosine", metadata={
        "help": "transformers scheduler name: linear, cosine, constant, constant_with_warmup, ..."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of the steps spent warming the learning rate up from 0."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables clipping)."})
    max_seq_len: int = field(default=1024, metadata={
        "help": "Longest sequence trained on; longer ones are truncated (SFT: packed row length)."})
    seed: int = field(default=42, metadata={"help": "Seed of weights init (LoRA), dropout and data order."})
    save_steps: int = field(default=500, metadata={"help": "Write a checkpoint every N optimizer steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep only the newest N checkpoints (null: all)."})
    resume: str = field(default="never", metadata={
        "help": "auto: continue from the newest checkpoint in output_dir/checkpoints if there is one; "
                "never: start from the base model; or a checkpoint directory path."})
    deepspeed: str | None = field(default=None, metadata={
        "help": "DeepSpeed config name (configs/deepspeed/NAME.json: zero2, zero3, zero3_offload) or a JSON path; "
                "null: no DeepSpeed."})
    bf16: bool | None = field(default=None, metadata={
        "help": "bfloat16 mixed precision; null: on when a CUDA GPU with bf16 support is present."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations in the backward pass (less memory, ~20% slower)."})
    attn_implementation: str = field(default="sdpa", metadata={
        "help": "Attention kernel: sdpa, eager, or flash_attention_2 (GPU, needs the flash-attn package)."})
    evaluate: bool = field(default=True, metadata={
        "help": "Compute the validation loss (and DPO rewards) at the end when the dataset has a validation split."})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA adapters (peft)."})

    def validate(self) -> None:
        if self.resume not in ("auto", "never") and not Path(self.resume).is_dir():
            raise ConfigError(f"resume: '{self.resume}' is neither auto, never nor an existing checkpoint directory")
        if self.deepspeed is not None:
            deepspeed_config_path(self.deepspeed)
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps: must be positive or -1 (use num_train_epochs), got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")


def deepspeed_config_path(name: str) -> Path:
    """``zero2`` -> configs/deepspeed/zero2.json; a path to a JSON file is used as is."""
    p = Path(name)
    if p.suffix == ".json":
        if not p.is_file():
            raise ConfigError(f"deepspeed: config file '{name}' does not exist")
        return p
    preset = preset_dir("deepspeed") / f"{name}.json"
    if not preset.is_file():
        known = ", ".join(sorted(q.stem for q in preset_dir("deepspeed").glob("*.json"))) or "none"
        raise ConfigError(f"deepspeed: no config named '{name}' (known: {known}; or pass a .json path)")
    return preset


# --- 2. inputs ---------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Everything resolved and checked before training starts."""

    model_dir: Path
    dataset_dir: Path
    manifest: dict
    manifest_sha256: str
    tokenizer_sha256: str
    train_rows: list[dict]
    validation_rows: list[dict]


def prepare_inputs(cfg: TrainConfig, extra_models: dict[str, str] | None = None) -> tuple[Inputs, dict[str, Path]]:
    """Resolve model and dataset and check they belong together; no training import happens here.

    ``extra_models`` (e.g. DPO's ``{"ref_model": ...}``) are resolved too and must share the
    base model's tokenizer. Raises CharopsError with a one-line message on any problem.
    """
    from charops.model import tokenizer_sha256
    from charops.model.load import resolve_model

    model_dir = resolve_model(cfg.model)
    tok_sha = tokenizer_sha256(model_dir)
    extra: dict[str, Path] = {}
    for key, ref in (extra_models or {}).items():
        extra[key] = resolve_model(ref)
        other = tokenizer_sha256(extra[key])
        if other != tok_sha:
            raise CharopsError(f"{key} '{ref}' has a different tokenizer (sha256 {other[:12]}) than model "
                               f"'{cfg.model}' ({tok_sha[:12]}); both must come from the same base model")

    dataset_dir = resolve_dataset(cfg, model_dir)
    manifest_path = dataset_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    data_tok = manifest.get("tokenizer", {}).get("sha256")
    if data_tok != tok_sha:
        raise DataError(f"dataset '{dataset_dir}' was tokenized with tokenizer {str(data_tok)[:12]} but model "
                        f"'{cfg.model}' has tokenizer {tok_sha[:12]}; re-run `charops data prepare` with this model")
    train_path = dataset_dir / cfg.split_dir / "train.jsonl"
    if not train_path.is_file():
        raise DataError(f"dataset '{dataset_dir}' has no {cfg.split_dir}/train.jsonl; it holds no "
                        f"{cfg.stage} data (prepare it from records of that kind)")
    train_rows = list(read_jsonl(train_path))
    if not train_rows:
        raise DataError(f"{train_path}: no rows to train on")
    val_path = dataset_dir / cfg.split_dir / "validation.jsonl"
    val_rows = list(read_jsonl(val_path)) if val_path.is_file() else []
    return Inputs(model_dir, dataset_dir, manifest, sha256_file(manifest_path), tok_sha, train_rows, val_rows), extra


def resolve_dataset(cfg: TrainConfig, model_dir: Path) -> Path:
    """A prepared dataset directory as is; a raw file is prepared first into output_dir/dataset."""
    p = Path(cfg.dataset)
    if p.is_dir():
        if not (p / "manifest.json").is_file():
            raise DataError(f"dataset '{p}' has no manifest.json: not a prepared dataset directory "
                            "(run `charops data prepare`, or pass a raw data file)")
        return p
    if p.is_file():
        from charops.data.prepare import PrepareConfig
        from charops.data.prepare import run as prepare

        out = Path(cfg.output_dir) / "dataset"
        prepare(load_config(PrepareConfig, {"inputs": [str(p)], "model": str(model_dir),
                                            "output_dir": str(out), "overwrite": True}))
        return out
    raise DataError(f"dataset '{cfg.dataset}' does not exist; pass a prepared dataset directory or a raw data file")


def check_rows(rows: list[dict], keys: tuple[str, ...], where: str) -> None:
    """Each row must carry ``keys``; says which row and key when one does not."""
    for i, row in enumerate(rows):
        for key in keys:
            if key not in row:
                raise DataError(f"{where} row {i + 1} (id {row.get('id', '?')}): missing field '{key}'; "
                                "re-run `charops data prepare`")


# --- 3. Trainer arguments ------------------------------------------------------------------------


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


def training_arguments(cfg: TrainConfig, args_cls: type, **stage_kwargs: Any):
    """The Trainer arguments for ``cfg``: ``args_cls`` is TrainingArguments, trl.SFTConfig or trl.DPOConfig.

    Build this before loading the model: with ZeRO-3 it makes ``from_pretrained`` load the weights
    already partitioned across ranks.
    """
    run_dir = Path(cfg.output_dir)
    gpu = cuda_available()
    if cfg.deepspeed is not None:
        setup_single_process_distributed(run_dir)
    bf16 = cfg.bf16 if cfg.bf16 is not None else (gpu and _bf16_supported())
    if bf16 and not gpu:
        raise ConfigError("bf16: needs a CUDA GPU with bfloat16 support; set bf16=false on this machine")
    return args_cls(
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


def _bf16_supported() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


def load_model(model_dir: Path, cfg: TrainConfig, bf16: bool):
    """The causal LM, in bf16 when training in bf16 with DeepSpeed (it keeps fp32 master weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16 and cfg.deepspeed else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=cfg.attn_implementation)
    return model


def load_tokenizer(model_dir: Path):
    from charops.model.load import load_tokenizer as _load

    tok = _load(model_dir)
    if tok.pad_token is None:  # hub models without a pad token: padding positions are masked anyway
        tok.pad_token = tok.eos_token
    return tok


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


def count_tokens(inputs: dict) -> tuple[int, int, int]:
    """(tokens, supervised tokens, slots) of a causal-LM micro-batch.

    tokens excludes padding; slots is the batch tensor's size (padding included); supervised
    counts targets, labels shifted as the loss shifts them (the first is never predicted).
    """
    import torch

    slots = int(inputs["input_ids"].numel())
    tokens = int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else slots
    supervised = int(torch.count_nonzero(inputs["labels"][..., 1:] != -100))
    return tokens, supervised, slots


# --- 4. the run record -------------------------------------------------------------------------


class RunRecorder(TrainerCallback):
    """TrainerCallback keeping token totals in the log history (so they survive a resume) and timing.

    A stage's trainer calls :meth:`count` for every training micro-batch; the totals are summed over
    ranks and written into every log entry as ``tokens_seen`` and ``supervised_tokens``.
    """

    def __init__(self, wall_start: float | None = None) -> None:
        self.tokens = 0
        self.supervised = 0
        self.slots = 0  # batch positions incl. padding (this run only): non-padding fraction
        self._run_tokens_start = 0
        self._run_supervised_start = 0
        self.start_step = 0
        self.wall_start = wall_start or time.time()
        self.train_start: float | None = None
        self.train_end: float | None = None
        self.accelerator = None

    def count(self, tokens: int, supervised: int, slots: int) -> None:
        import torch

        if self.accelerator is not None and self.accelerator.num_processes > 1:
            t = torch.tensor([tokens, supervised, slots], device=self.accelerator.device)
            tokens, supervised, slots = (int(x) for x in self.accelerator.reduce(t, reduction="sum"))
        self.tokens += tokens
        self.supervised += supervised
        self.slots += slots

    def on_train_begin(self, args, state, control, **kwargs):
        # Resumed: the checkpoint's log history holds the totals up to its step.
        for entry in reversed(state.log_history):
            if "tokens_seen" in entry:
                self.tokens, self.supervised = int(entry["tokens_seen"]), int(entry["supervised_tokens"])
                break
        self._run_tokens_start, self._run_supervised_start = self.tokens, self.supervised
        self.start_step = state.global_step
        self.train_start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            totals = {"tokens_seen": self.tokens, "supervised_tokens": self.supervised}
            logs.update(totals)
            state.log_history[-1].update(totals)  # Trainer.log appended its copy before calling us
            if state.is_world_process_zero:  # progress on stderr: stdout is for the summary (--json)
                extra = "".join(f" {k.split('/')[1]}={logs[k]:.4f}" for k in ("rewards/margins", "rewards/accuracies")
                                if k in logs)
                print(f"step {state.global_step}/{state.max_steps} loss={logs['loss']:.4f} "
                      f"lr={logs.get('learning_rate', 0):.3g} tokens={self.tokens}{extra}", file=sys.stderr)

    def on_train_end(self, args, state, control, **kwargs):
        self.train_end = time.time()

    def throughput(self) -> dict:
        seconds = (self.train_end or time.time()) - (self.train_start or self.wall_start)
        tokens = self.tokens - self._run_tokens_start
        supervised = self.supervised - self._run_supervised_start
        return {
            "train_seconds": seconds,
            "tokens_this_run": tokens,
            "supervised_tokens_this_run": supervised,
            "tokens_per_second": tokens / seconds if seconds > 0 else None,
            "supervised_tokens_per_second": supervised / seconds if seconds > 0 else None,
            "non_padding_fraction": tokens / self.slots if self.slots else None,
        }


# --- 5. final model and summary ----------------------------------------------------------------


def attach_recorder(trainer, recorder: RunRecorder) -> None:
    """Record every step of ``trainer`` with ``recorder`` (its ``compute_loss`` counts tokens)."""
    trainer.recorder = recorder
    recorder.accelerator = trainer.accelerator
    trainer.add_callback(recorder)
    # The recorder prints progress to stderr; Trainer's printer would put dicts on stdout.
    trainer.remove_callback(PrinterCallback)


def loss_curve(log_history: list[dict]) -> list[dict]:
    """One entry per logged training step: step, loss, learning_rate, grad_norm, stage metrics."""
    keep = ("loss", "learning_rate", "grad_norm", "tokens_seen", "supervised_tokens", "mean_token_accuracy",
            "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
            "logps/chosen", "logps/rejected")
    return [{"step": e["step"], **{k: e[k] for k in keep if k in e}} for e in log_history if "loss" in e]


REWARD_KEYS = ("chosen", "rejected", "margins", "accuracies")


def reward_metrics(curve: list[dict], eval_metrics: dict) -> dict:
    """DPO's implicit-reward metrics: last step, mean over the logged steps, validation ({} otherwise)."""
    if not curve or "rewards/margins" not in curve[-1]:
        return {}
    return {"rewards": {
        "final": {k: curve[-1][f"rewards/{k}"] for k in REWARD_KEYS},
        "mean": {k: sum(e[f"rewards/{k}"] for e in curve) / len(curve) for k in REWARD_KEYS},
        "eval": {k: eval_metrics[f"eval_rewards/{k}"] for k in REWARD_KEYS if f"eval_rewards/{k}" in eval_metrics},
    }}


def finish(trainer, cfg: TrainConfig, inputs: Inputs, recorder: RunRecorder, resumed_from: str | None,
           extra: dict | None = None) -> dict:
    """Write output_dir/model and training_summary.json atomically; return the summary (all ranks)."""
    model_dir = Path(cfg.output_dir) / MODEL
    eval_metrics = {}
    if cfg.evaluate and trainer.eval_dataset is not None:
        eval_metrics = {k: v for k, v in trainer.evaluate().items() if isinstance(v, (int, float))}
    state = trainer.state
    curve = loss_curve(state.log_history)
    summary = {
        "stage": cfg.stage,
        "config": to_dict(cfg),
        "base_model": {"ref": cfg.model, "path": str(inputs.model_dir), "tokenizer_sha256": inputs.tokenizer_sha256},
        "dataset": {
            "path": str(inputs.dataset_dir),
            "manifest_sha256": inputs.manifest_sha256,
            "content_sha256": inputs.manifest.get("content_sha256"),
            "train_rows": len(inputs.train_rows),
            "validation_rows": len(inputs.validation_rows),
        },
        "model_dir": str(model_dir),
        "steps": state.global_step,
        "epochs": state.epoch,
        "resumed_from": resumed_from,
        "tokens_seen": recorder.tokens,
        "supervised_tokens": recorder.supervised,
        **recorder.throughput(),
        "wall_time_seconds": time.time() - recorder.wall_start,
        "final_loss": curve[-1]["loss"] if curve else None,
        "loss_curve": curve,
        "eval": eval_metrics,
        "world_size": trainer.accelerator.num_processes,
        "deepspeed": ({"config": cfg.deepspeed, "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage}
                      if trainer.is_deepspeed_enabled else None),
        **reward_metrics(curve, eval_metrics),
        "device": _device_name(),
        "versions": _versions(),
        **(extra or {}),
    }
    save_model(trainer, inputs.model_dir, model_dir, cfg, summary)
    if trainer.accelerator.is_main_process:
        write_json(Path(cfg.output_dir) / SUMMARY, summary)
    trainer.accelerator.wait_for_everyone()
    return summary


def save_model(trainer, base_dir: Path, model_dir: Path, cfg: TrainConfig, summary: dict) -> None:
    """Gather the weights (a collective under ZeRO-3), then write the model directory on rank 0."""
    from accelerate.utils import is_peft_model

    accelerator = trainer.accelerator
    model = trainer.model_wrapped if trainer.is_deepspeed_enabled else trainer.model
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(trainer.model)
    if accelerator.is_main_process:
        with atomic_dir(model_dir, overwrite=True) as tmp:
            if is_peft_model(unwrapped):
                # Serving wants one plain model directory: merge the adapter into a fresh copy of the base.
                unwrapped.save_pretrained(tmp / "adapter", state_dict=state_dict)
                _merge_adapter(base_dir, tmp / "adapter", tmp, cfg)
            else:
                unwrapped.config.use_cache = True  # training turned the KV cache off; generation wants it
                unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            copy_tokenizer_files(base_dir, tmp)
            write_json(tmp / SUMMARY, summary)
    accelerator.wait_for_everyone()


# Tokenizer files of a Hugging Face directory (fast or slow tokenizers, chat template).
TOKENIZER_FILE_PATTERNS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.j*",
                           "vocab.json", "merges.txt")


def copy_tokenizer_files(base_dir: Path, out: Path) -> None:
    """Copy the base model's tokenizer byte for byte: training does not change it, and a re-save
    by transformers would rewrite tokenizer_config.json and so the tokenizer hash datasets carry."""
    for pattern in TOKENIZER_FILE_PATTERNS:
        for p in Path(base_dir).glob(pattern):
            if p.is_file():
                shutil.copy2(p, out / p.name)


def _merge_adapter(base_dir: Path, adapter_dir: Path, out: Path, cfg: TrainConfig) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(out, safe_serialization=True)


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("charops", "torch", "transformers", "trl", "peft", "accelerate", "deepspeed"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def prepare_run_dir(cfg: TrainConfig, resume_from: str | None) -> None:
    """A fresh run (no resume) starts from an empty checkpoints folder and no stale summary."""
    run_dir = Path(cfg.output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output_dir '{run_dir}' exists and is not a directory")
    (run_dir / SUMMARY).unlink(missing_ok=True)
    if resume_from is None:
        shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)


# --- python -m charops.train.<stage> -----------------------------------------------------------


def main(cls: type, run, argv: list[str] | None = None) -> None:
    """Command line of a stage module: ``--config PRESET [--resume auto] [key=value ...]``."""
    summary = stage_main(cls, run, argv, default="tiny-cpu", flags={"--resume": "resume"})
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: summary[k] for k in ("stage", "model_dir", "steps", "final_loss", "tokens_seen",
                                                  "supervised_tokens", "tokens_per_second")}, indent=2))
