"""The fields every training stage has, the run directory layout, and a stage's command line.

Public names (what a stage module imports; every stage of ``charops.train.stages.STAGES`` uses them)::

    from charops.train.config import TrainConfig, LoraSettings, stage_cli
    @dataclass
    class RewardConfig(TrainConfig):
        stage: ClassVar[str] = "reward"      # presets under configs/reward/
        split_dir: ClassVar[str] = "dpo"     # which split of the prepared dataset it reads
    ...
    def main(argv=None):
        stage_cli(RewardConfig, run, argv)   # python -m charops.train.reward --config tiny-cpu

Run directory layout (``output_dir``)::

    model/                   the trained model (a Hugging Face directory; the next stage's `model`),
                             with training_summary.json and the dataset's characters.jsonl
    checkpoints/checkpoint-N  Trainer checkpoints (optimizer, scheduler, RNG) for `resume=auto`
    dataset/                 only when `dataset` was a raw file (prepared here) or an s3:// prefix
    training_summary.json    also copied into model/
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from charops.config import preset_dir, stage_main
from charops.errors import ConfigError

CHECKPOINTS = "checkpoints"
MODEL = "model"
SUMMARY = "training_summary.json"
CHARACTERS = "characters.jsonl"


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
    """Fields every training stage has; each stage's config (``charops.train.stages.STAGES``) adds its own."""

    stage: ClassVar[str] = ""
    # Which split of the prepared dataset directory the stage reads (pretrain/, sft/ or dpo/).
    split_dir: ClassVar[str] = ""

    model: str = field(default="runs/base", metadata={
        "help": "Base model: a Hugging Face model directory, an s3://bucket/prefix or a hub id."})
    dataset: str = field(default="runs/data", metadata={
        "help": "Prepared dataset directory (charops data prepare) or an s3://bucket/prefix it was published to "
                "(downloaded into output_dir/dataset), or a raw data file that is prepared first into "
                "output_dir/dataset with the base model's tokenizer."})
    output_dir: str = field(default="", metadata={
        "help": "Run directory: model/ (the trained model), checkpoints/, training_summary.json; "
                "empty: runs/<stage>."})
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
        "help": "bfloat16 mixed precision; null: on when a CUDA GPU with bf16 support is present. On a CPU, "
                "true autocasts to bf16 when it has avx512_bf16 or amx_bf16, else trains in float32 with a note."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations in the backward pass (less memory, ~20% slower)."})
    attn_implementation: str = field(default="sdpa", metadata={
        "help": "Attention kernel: sdpa, eager, or flash_attention_2 (GPU, needs the flash-attn package)."})
    evaluate: bool = field(default=True, metadata={
        "help": "Compute the validation loss (and DPO rewards) at the end when the dataset has a validation split."})
    progress: bool = field(default=True, metadata={
        "help": "A line per logged step (and the raw-file prepare's progress bar) on stderr; "
                "charops train -q turns it off."})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA adapters (peft)."})

    def __post_init__(self) -> None:
        self.output_dir = self.output_dir or f"runs/{self.stage}"

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
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate: must be above 0, got {self.learning_rate:g}")
        from transformers.trainer_utils import SchedulerType  # checked here, before any model loads

        names = [t.value for t in SchedulerType]
        if self.lr_scheduler_type not in names:
            raise ConfigError(f"lr_scheduler_type: '{self.lr_scheduler_type}' is not a transformers scheduler "
                              f"(one of {', '.join(names)})")


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


def stage_cli(cls: type, run, argv: list[str] | None = None) -> None:
    """Command line of a stage module: ``--config PRESET [--resume auto] [key=value ...]``."""
    summary = stage_main(cls, run, argv, default="tiny-cpu", flags={"--resume": "resume"})
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: summary[k] for k in ("stage", "model_dir", "steps", "final_loss", "tokens_seen",
                                                  "supervised_tokens", "tokens_per_second")}, indent=2))
