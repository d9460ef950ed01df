"""The end of a training run: the final model directory and ``training_summary.json``.

Public names::

    from charops.train.finish import finish
    summary = finish(trainer, cfg, inputs, trainer.recorder, resume_from, extra={...})

``finish`` evaluates on the validation split (when there is one and ``evaluate`` is on), writes
``output_dir/model`` atomically (safetensors, the base model's tokenizer files byte for byte,
chat template; LoRA adapters merged into a plain model; the dataset's ``characters.jsonl`` so
serving and the model card know the model's characters) and ``training_summary.json`` (also
inside ``model/``), and returns the summary on every rank.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path

from charops.config import to_dict
from charops.io import atomic_dir, write_json
from charops.train.config import CHARACTERS, MODEL, SUMMARY, TrainConfig
from charops.train.inputs import Inputs
from charops.train.recorder import RunRecorder


def loss_curve(log_history: list[dict]) -> list[dict]:
    """One entry per logged training step: step, loss, learning_rate, grad_norm, stage metrics."""
    keep = ("loss", "learning_rate", "grad_norm", "tokens_seen", "supervised_tokens", "mean_token_accuracy",
            "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
            "logps/chosen", "logps/rejected")
    return [{"step": e["step"], **{k: e[k] for k in keep if k in e}} for e in log_history if "loss" in e]


REWARD_KEYS = ("chosen", "rejected", "margins", "accuracies")


def reward_metrics(curve: list[dict], eval_metrics: dict) -> dict:
    """DPO's (and KTO's) implicit-reward metrics: last step, mean over the logged steps, validation
    ({} otherwise). KTO logs no rewards/accuracies: only the keys a stage logs are reported."""
    if not curve or "rewards/margins" not in curve[-1]:
        return {}
    keys = [k for k in REWARD_KEYS if all(f"rewards/{k}" in e for e in curve)]
    return {"rewards": {
        "final": {k: curve[-1][f"rewards/{k}"] for k in keys},
        "mean": {k: sum(e[f"rewards/{k}"] for e in curve) / len(curve) for k in keys},
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
        "bf16": bool(trainer.args.bf16),  # what ran: bf16=true falls back to float32 on a CPU without it
        "deepspeed": ({"config": cfg.deepspeed, "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage}
                      if trainer.is_deepspeed_enabled else None),
        **reward_metrics(curve, eval_metrics),
        "device": _device_name(),
        "versions": _versions(),
        **(extra or {}),
    }
    save_model(trainer, inputs, model_dir, summary)
    if trainer.accelerator.is_main_process:
        write_json(Path(cfg.output_dir) / SUMMARY, summary)
    trainer.accelerator.wait_for_everyone()
    return summary


def save_model(trainer, inputs: Inputs, model_dir: Path, summary: dict) -> None:
    """Gather the weights (a collective under ZeRO-3), then write the model directory on rank 0."""
    from accelerate.utils import is_peft_model

    base_dir = inputs.model_dir
    accelerator = trainer.accelerator
    model = trainer.model_wrapped if trainer.is_deepspeed_enabled else trainer.model
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(trainer.model)
    if accelerator.is_main_process:
        with atomic_dir(model_dir, overwrite=True) as tmp:
            if is_peft_model(unwrapped):
                # Serving wants one plain model directory: merge the adapter into a fresh copy of the base.
                unwrapped.save_pretrained(tmp / "adapter", state_dict=state_dict)
                _merge_adapter(base_dir, tmp / "adapter", tmp)
            else:
                unwrapped.config.use_cache = True  # training turned the KV cache off; generation wants it
                unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            copy_tokenizer_files(base_dir, tmp)
            copy_characters(inputs, tmp)
            record_trained_characters(inputs, tmp)
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


def copy_characters(inputs: Inputs, out: Path) -> Path | None:
    """The model's characters (CharacterProfile records) into ``out/characters.jsonl``.

    They come from the dataset the stage trained on (``charops data prepare`` writes them); a
    dataset without the file (prepared by an older charops) keeps the base model's, if it has
    any, so characters still travel along pretrain -> sft -> dpo.
    """
    for source in (inputs.dataset_dir / CHARACTERS, inputs.model_dir / CHARACTERS):
        if source.is_file():
            shutil.copy2(source, out / CHARACTERS)
            return out / CHARACTERS
    return None


def record_trained_characters(inputs: Inputs, out: Path) -> Path | None:
    """``out/trained_characters.json``: the characters this model's training rows covered.

    SFT, DPO and reward rows name their character; the base model's list (an SFT model under
    DPO) is kept. A stage whose rows name no character (pretraining) passes the base's list on
    unchanged, or writes none. Serving flags the other profiles of ``characters.jsonl`` as
    untrained (all their data was rejected by ``charops data prepare``).
    """
    from charops.serve.characters import TRAINED_FILE, trained_names

    names = {r["character"] for r in inputs.train_rows if isinstance(r.get("character"), str)}
    base = trained_names(inputs.model_dir)
    if not names and base is None:
        return None
    write_json(out / TRAINED_FILE, {"trained": sorted(names | (base or set()))})
    return out / TRAINED_FILE


def _merge_adapter(base_dir: Path, adapter_dir: Path, out: Path) -> None:
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
