"""KTO on unpaired feedback: replies people liked (label true) and disliked (false), TRL's KTOTrainer.

    charops feedback export --model charops-chat --format kto --out runs/feedback
    charops train kto --config tiny-cpu model=runs/sft/model dataset=runs/feedback
    python -m charops.train.kto --config tiny-cpu desirable_weight=1.0 undesirable_weight=1.33

KTO (Ethayarajh et al. 2024) needs no pairs: with r(x, y) = log(pi(y|x)/pi_ref(y|x)) and z_ref
an estimate of KL(pi || pi_ref) from mismatched (prompt, reply) pairs of the batch,

    L = E_desirable[w_d (1 - sigma(beta (r - z_ref)))] + E_undesirable[w_u (1 - sigma(beta (z_ref - r)))]

so thumbs and "both bad" votes train too. TRL logs rewards/chosen, rewards/rejected, kl and
the log-probabilities every step; they are in training_summary.json. ``desirable_weight`` and
``undesirable_weight`` balance the two kinds (the paper: keep w_d n_d / (w_u n_u) in [1, 4/3]);
the summary records both counts.

``dataset`` is a feedback export directory (``kto/{train,validation}.jsonl``, TRL's
conversational ``prompt``/``completion``/``label`` rows) or a prepared dataset with a ``kto/``
split; the rows are tokenized here with the model's chat template. ``ref_model`` defaults to
the starting model (the production model the feedback was given on).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import trl

from charops.errors import ConfigError, DataError
from charops.io import read_jsonl, sha256_file
from charops.train import arguments
from charops.train.config import TrainConfig, stage_cli
from charops.train.finish import finish
from charops.train.inputs import Inputs, check_rows
from charops.train.recorder import RecordingTrainer, RunRecorder


@dataclass
class KTOConfig(TrainConfig):
    """Kahneman-Tversky optimisation on replies labelled desirable or undesirable."""

    stage: ClassVar[str] = "kto"
    split_dir: ClassVar[str] = "kto"

    output_dir: str = field(default="runs/kto", metadata={
        "help": "Run directory: model/ (the trained model), checkpoints/, training_summary.json."})
    ref_model: str | None = field(default=None, metadata={
        "help": "Reference model (default: the starting model), as a directory, s3:// prefix or hub id."})
    beta: float = field(default=0.1, metadata={
        "help": "Strength of the pull towards the reference: higher keeps the policy closer to it."})
    desirable_weight: float = field(default=1.0, metadata={
        "help": "Weight of the desirable (label true) rows' loss."})
    undesirable_weight: float = field(default=1.0, metadata={
        "help": "Weight of the undesirable (label false) rows' loss."})

    def validate(self) -> None:
        super().validate()
        if self.beta <= 0:
            raise ConfigError(f"beta: must be positive, got {self.beta}")
        for key in ("desirable_weight", "undesirable_weight"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key}: must be positive, got {getattr(self, key)}")
        if self.per_device_train_batch_size < 2:
            # The KL estimate pairs each prompt with another row's reply in the same batch.
            raise ConfigError("kto: per_device_train_batch_size must be at least 2 (the KL term "
                              "pairs each prompt with another row's reply of the batch)")


def check_kto_rows(rows: list[dict], where: str) -> None:
    check_rows(rows, ("prompt", "completion", "label"), where)
    for i, row in enumerate(rows, 1):
        if not isinstance(row["label"], bool):
            raise DataError(f"{where} row {i}: 'label' must be true or false")


def to_trainer_rows(rows: list[dict]) -> list[dict]:
    """Conversational prompt/completion/label, the form KTOTrainer tokenizes with the chat template."""
    return [{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"]} for r in rows]


def resolve_inputs(cfg: KTOConfig) -> tuple[Inputs, Path]:
    """The model, reference and rows: a local export or prepared directory with a kto/ split."""
    from charops.model import tokenizer_sha256
    from charops.model.load import quiet_progress_bars, resolve_model

    if not cfg.progress:
        quiet_progress_bars()
    model_dir = resolve_model(cfg.model)
    ref_dir = resolve_model(cfg.ref_model) if cfg.ref_model else model_dir
    tok = tokenizer_sha256(model_dir)
    if ref_dir != model_dir and tokenizer_sha256(ref_dir) != tok:
        raise ConfigError(f"ref_model '{cfg.ref_model}' has another tokenizer than model '{cfg.model}'")
    data = Path(cfg.dataset)
    train_path = data / "kto" / "train.jsonl"
    if not train_path.is_file():
        raise DataError(f"dataset '{data}' has no kto/train.jsonl: export feedback with "
                        "`charops feedback export --format kto --out DIR` and pass dataset=DIR")
    train = list(read_jsonl(train_path))
    val_path = data / "kto" / "validation.jsonl"
    val = list(read_jsonl(val_path)) if val_path.is_file() else []
    if not train:
        raise DataError(f"{train_path}: no rows to train on")
    check_kto_rows(train, str(train_path))
    check_kto_rows(val, str(val_path))
    if len({r["label"] for r in train}) < 2:
        raise DataError(f"{train_path}: every row has label {train[0]['label']}; KTO needs both "
                        "desirable and undesirable replies")
    digest = sha256_file(train_path)
    manifest: dict[str, Any] = {"content_sha256": digest, "kind": "feedback-export",
                                "desirable": sum(r["label"] for r in train),
                                "undesirable": sum(not r["label"] for r in train)}
    return Inputs(model_dir, data, manifest, digest, tok, train, val), ref_dir


class CharopsKTOTrainer(RecordingTrainer, trl.KTOTrainer):
    """TRL's KTOTrainer, counting tokens and reply tokens of every step."""

    def batch_counts(self, model, inputs) -> tuple[int, int, int]:
        return (int(inputs["attention_mask"].sum()), int(inputs["completion_mask"].sum()),
                int(inputs["input_ids"].numel()))


def run(cfg: KTOConfig, callbacks: list | None = None) -> dict:
    """Train, write output_dir/model and training_summary.json, return the summary."""
    import datasets

    wall_start = time.time()
    inputs, ref_dir = resolve_inputs(cfg)
    resume_from = arguments.checkpoint_to_resume(cfg)
    arguments.prepare_run_dir(cfg, resume_from)
    args = arguments.training_arguments(
        cfg, max_length=cfg.max_seq_len, beta=cfg.beta, desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight)
    tokenizer = arguments.load_tokenizer(inputs.model_dir)
    model = arguments.load_model(inputs.model_dir, cfg, args.bf16)
    # As in DPO: TRL's own reference is a frozen copy of the starting model when none is given.
    ref_model = None if Path(ref_dir).resolve() == Path(inputs.model_dir).resolve() else \
        arguments.load_model(ref_dir, cfg, args.bf16)
    trainer = CharopsKTOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=datasets.Dataset.from_list(to_trainer_rows(inputs.train_rows)),
        eval_dataset=(datasets.Dataset.from_list(to_trainer_rows(inputs.validation_rows))
                      if len(inputs.validation_rows) >= 2 and cfg.evaluate else None),
        processing_class=tokenizer,
        peft_config=arguments.peft_config(cfg),
        callbacks=callbacks,
        recorder=RunRecorder(wall_start, progress=cfg.progress),
    )
    trainer.train(resume_from_checkpoint=resume_from)
    return finish(trainer, cfg, inputs, trainer.recorder, resume_from,
                  {"reference_model": {"ref": cfg.ref_model or cfg.model, "path": str(ref_dir)},
                   "feedback": {"desirable": inputs.manifest["desirable"],
                                "undesirable": inputs.manifest["undesirable"]}})


def main(argv: list[str] | None = None) -> None:
    stage_cli(KTOConfig, run, argv)


if __name__ == "__main__":
    main()
