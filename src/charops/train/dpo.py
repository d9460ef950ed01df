"""DPO against the SFT model as reference (TRL DPOTrainer).

    charops train dpo --config tiny-cpu
    python -m charops.train.dpo --config tiny-cpu model=runs/sft/model ref_model=runs/sft/model beta=0.1
    torchrun --nproc-per-node 8 -m charops.train.dpo --config qwen2-7b-zero3

L_DPO = -E log sigma(beta * log(pi(y_c|x)/pi_ref(y_c|x)) - beta * log(pi(y_r|x)/pi_ref(y_r|x))),
log pi(y|x) being the summed log-probabilities of the reply's tokens. The implicit rewards
beta * log(pi/pi_ref) of the chosen and rejected replies, their margin and how often the chosen
one wins are logged every step (rewards/chosen, rewards/rejected, rewards/margins,
rewards/accuracies) and reported in training_summary.json.

``ref_model`` is required: the reference is the SFT model (normally the same model DPO starts
from). With ``precompute_ref_log_probs`` the reference log-probs of every pair are computed once
before training, and the reference model is not held in memory while training; when the
reference is the starting model itself (or LoRA is on) no second copy is ever loaded.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import trl

from charops.errors import ConfigError
from charops.train import arguments
from charops.train.config import TrainConfig, stage_cli
from charops.train.finish import finish
from charops.train.inputs import check_rows, prepare_inputs
from charops.train.recorder import RecordingTrainer, RunRecorder


@dataclass
class DPOConfig(TrainConfig):
    """Direct preference optimisation on chosen/rejected character replies."""

    stage: ClassVar[str] = "dpo"
    split_dir: ClassVar[str] = "dpo"

    ref_model: str | None = field(default=None, metadata={
        "help": "Reference model (required): the SFT model, as a directory, s3:// prefix or hub id."})
    beta: float = field(default=0.1, metadata={
        "help": "Strength of the pull towards the reference: higher keeps the policy closer to it."})
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = field(default="sigmoid", metadata={
        "help": "sigmoid: the DPO paper's loss; hinge, ipo, robust: TRL's variants."})
    precompute_ref_log_probs: bool = field(default=False, metadata={
        "help": "Compute the reference log-probs once before training, so the reference model is not in memory "
                "while training."})

    def validate(self) -> None:
        super().validate()
        if not self.ref_model:
            raise ConfigError("dpo: ref_model is required (the SFT model DPO is measured against), "
                              "e.g. ref_model=runs/sft/model")
        if self.beta <= 0:
            raise ConfigError(f"beta: must be positive, got {self.beta}")


def check_pairs(rows: list[dict], where: str) -> None:
    check_rows(rows, ("prompt", "chosen", "rejected"), where)


def to_trainer_rows(rows: list[dict]) -> list[dict]:
    """Conversational prompt/chosen/rejected, the form DPOTrainer tokenizes with the chat template."""
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def pairs_dataset(rows: list[dict], cfg: DPOConfig, args, split: str):
    """The pairs as a ``datasets.Dataset``; on several ranks with precomputed reference log-probs,
    one saved under ``output_dir/pairs/<split>`` that every rank of this node reads.

    TRL's precompute writes the log-probs on rank 0 to a cache file named after the dataset's
    own file, and the other ranks read that file. An in-memory dataset has no file: each rank
    would name its own temporary one, and rank 1 fails with FileNotFoundError.
    """
    import datasets

    dataset = datasets.Dataset.from_list(to_trainer_rows(rows))
    if args.world_size <= 1 or not cfg.precompute_ref_log_probs:
        return dataset
    path = Path(cfg.output_dir) / "pairs" / split
    with args.main_process_first(desc=f"saving the {split} pairs to {path}"):
        if args.local_process_index == 0:  # first, alone: the others wait, then read what it wrote
            shutil.rmtree(path, ignore_errors=True)
            dataset.save_to_disk(str(path))
        return datasets.load_from_disk(str(path))


class CharopsDPOTrainer(RecordingTrainer, trl.DPOTrainer):
    """TRL's DPOTrainer, counting tokens (prompt + both replies) and reply tokens of every step."""

    def batch_counts(self, model, inputs) -> tuple[int, int, int]:
        # The batch is [chosen rows; rejected rows]; completion_mask marks the reply tokens.
        return (int(inputs["attention_mask"].sum()), int(inputs["completion_mask"][..., 1:].sum()),
                int(inputs["input_ids"].numel()))


def run(cfg: DPOConfig, callbacks: list | None = None) -> dict:
    """Train, write output_dir/model and training_summary.json (with reward metrics), return the summary."""
    wall_start = time.time()
    inputs, extra = prepare_inputs(cfg, {"ref_model": cfg.ref_model})
    where = f"{inputs.dataset_dir}/dpo"
    check_pairs(inputs.train_rows, f"{where}/train.jsonl")
    check_pairs(inputs.validation_rows, f"{where}/validation.jsonl")
    resume_from = arguments.checkpoint_to_resume(cfg)
    arguments.prepare_run_dir(cfg, resume_from)
    args = arguments.training_arguments(
        cfg,
        max_length=cfg.max_seq_len,
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
    )
    tokenizer = arguments.load_tokenizer(inputs.model_dir)
    model = arguments.load_model(inputs.model_dir, cfg, args.bf16)
    ref_dir = extra["ref_model"]
    # TRL's own reference when none is passed is the starting policy (or, with LoRA, the policy with
    # its adapter disabled): exactly the SFT model when DPO starts from it, with no second copy.
    same_as_start = Path(ref_dir).resolve() == Path(inputs.model_dir).resolve()
    ref_model = None if same_as_start and (cfg.precompute_ref_log_probs or cfg.lora.enabled) else \
        arguments.load_model(ref_dir, cfg, args.bf16)
    trainer = CharopsDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=pairs_dataset(inputs.train_rows, cfg, args, "train"),
        eval_dataset=(pairs_dataset(inputs.validation_rows, cfg, args, "validation")
                      if inputs.validation_rows and cfg.evaluate else None),
        processing_class=tokenizer,
        peft_config=arguments.peft_config(cfg),
        callbacks=callbacks,
        recorder=RunRecorder(wall_start, progress=cfg.progress),
    )
    if cfg.precompute_ref_log_probs and trainer.ref_model is not None:
        # The reference log-probs now sit in the dataset; training reads them from there.
        trainer.ref_model = None
        del ref_model
    trainer.train(resume_from_checkpoint=resume_from)
    return finish(trainer, cfg, inputs, trainer.recorder, resume_from,
                         {"reference_model": {"ref": cfg.ref_model, "path": str(ref_dir)}})


def main(argv: list[str] | None = None) -> None:
    stage_cli(DPOConfig, run, argv)


if __name__ == "__main__":
    main()
