"""Multi-turn SFT: loss on the tokens of every assistant turn, nothing else (TRL SFTTrainer).

    charops train sft --config tiny-cpu
    python -m charops.train.sft --config tiny-cpu model=runs/pretrain/model last_turn_only=true
    torchrun --nproc-per-node 8 -m charops.train.sft --config qwen2-7b-zero3

L_SFT = -1/n sum_i log P(y_i | x, y_<i), the sum over the n tokens of the assistant turns (each
turn's content and its end-of-turn token) of every dialogue in the batch.

The trainer is fed exactly what ``charops data prepare`` tokenized: ``input_ids`` plus an
``assistant_masks`` column read off the prepared ``labels`` (-100 outside assistant turns), so
TRL's ``assistant_only_loss`` trains on the same tokens the dataset says are supervised
(tests/unit/test_train_sft.py proves TRL's own tokenization of ``messages`` gives the same masks).

Packing (``packing=true``) uses TRL's best-fit-decreasing packing: whole dialogues are laid end
to end in rows of ``max_seq_len`` tokens (one longer than that is truncated, never split), with
``position_ids`` restarting at 0 for each and no attention mask, so transformers builds a
block-diagonal causal mask: a dialogue never attends to another. With FlashAttention the batch
is one flattened row (TRL's padding-free collator, variable-length kernel); with sdpa/eager the
rows stay rows (``charops.train.collate.PackedCollator``), which keeps the dense mask small.

A micro-batch with no supervised token is an error (a DataError naming the step), never a
silent zero loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import trl

from charops.data.tokenize import IGNORE_INDEX
from charops.errors import DataError
from charops.train import arguments
from charops.train.collate import PackedCollator
from charops.train.config import TrainConfig, stage_cli
from charops.train.finish import finish
from charops.train.inputs import check_rows, prepare_inputs
from charops.train.recorder import RecordingTrainer, RunRecorder


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on multi-turn character dialogues."""

    stage: ClassVar[str] = "sft"
    split_dir: ClassVar[str] = "sft"

    packing: bool = field(default=True, metadata={
        "help": "Pack several dialogues into each row (no padding; dialogues never attend to each other)."})
    last_turn_only: bool = field(default=False, metadata={
        "help": "Supervise only the last assistant turn of each dialogue instead of every assistant turn."})


def assistant_masks(labels: list[int], last_turn_only: bool) -> list[int]:
    """1 where a token is supervised (label != -100); with ``last_turn_only`` only the last run of them.

    Assistant turns are separated by user turns (unsupervised tokens), so each contiguous run of
    supervised tokens is one assistant turn.
    """
    mask = [int(label != IGNORE_INDEX) for label in labels]
    if last_turn_only and any(mask):
        end = len(mask) - mask[::-1].index(1)
        start = end
        while start > 0 and mask[start - 1]:
            start -= 1
        mask = [int(start <= i < end) for i in range(len(mask))]
    return mask


def to_trainer_rows(rows: list[dict], last_turn_only: bool, where: str) -> list[dict]:
    """Prepared rows -> ``messages``, ``input_ids``, ``assistant_masks`` (what SFTTrainer takes)."""
    check_rows(rows, ("messages", "input_ids", "labels"), where)
    out = []
    for i, row in enumerate(rows):
        ids, labels = row["input_ids"], row["labels"]
        if len(ids) != len(labels) or any(lab not in (IGNORE_INDEX, tok) for tok, lab in zip(ids, labels, strict=True)):
            raise DataError(f"{where} row {i + 1} (id {row.get('id', '?')}): labels must equal input_ids or be -100; "
                            "re-run `charops data prepare`")
        mask = assistant_masks(labels, last_turn_only)
        if not any(mask):
            raise DataError(f"{where} row {i + 1} (id {row.get('id', '?')}): no assistant token to train on; "
                            "every SFT dialogue needs an assistant turn")
        out.append({"messages": row["messages"], "input_ids": ids, "assistant_masks": mask})
    return out


class CharopsSFTTrainer(RecordingTrainer, trl.SFTTrainer):
    """TRL's SFTTrainer, counting tokens and refusing a micro-batch with nothing to learn."""

    def batch_counts(self, model, inputs) -> tuple[int, int, int]:
        tokens, supervised, slots = super().batch_counts(model, inputs)
        if isinstance(self.data_collator, PackedCollator):  # no attention mask: padding is pad tokens
            tokens = int((inputs["input_ids"] != self.data_collator.pad_token_id).sum())
        if supervised == 0:
            # TRL would return 0/1 = 0 here: a step that trains nothing and looks perfect.
            raise DataError(f"sft: a {'training' if model.training else 'validation'} micro-batch at step "
                            f"{self.state.global_step + 1} has no supervised (assistant) token; check the "
                            "dataset (dialogues without assistant turns, or max_seq_len cutting them off)")
        return tokens, supervised, slots


def run(cfg: SFTConfig, callbacks: list | None = None) -> dict:
    """Train, write output_dir/model and training_summary.json, return the summary."""
    wall_start = time.time()
    inputs, _ = prepare_inputs(cfg)
    train_rows = to_trainer_rows(inputs.train_rows, cfg.last_turn_only, f"{inputs.dataset_dir}/sft/train.jsonl")
    val_rows = to_trainer_rows(inputs.validation_rows, cfg.last_turn_only,
                               f"{inputs.dataset_dir}/sft/validation.jsonl") if inputs.validation_rows else []
    resume_from = arguments.checkpoint_to_resume(cfg)
    arguments.prepare_run_dir(cfg, resume_from)

    import datasets

    args = arguments.training_arguments(
        cfg,
        max_length=cfg.max_seq_len,
        packing=cfg.packing,
        packing_strategy="bfd",  # whole dialogues only: an overlong one is truncated, never split
        assistant_only_loss=True,
        eval_packing=cfg.packing,
        dataset_num_proc=None,
    )
    tokenizer = arguments.load_tokenizer(inputs.model_dir)
    model = arguments.load_model(inputs.model_dir, cfg, args.bf16)
    recorder = RunRecorder(wall_start, progress=cfg.progress)
    trainer = CharopsSFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_rows),
        eval_dataset=datasets.Dataset.from_list(val_rows) if val_rows and cfg.evaluate else None,
        processing_class=tokenizer,
        peft_config=arguments.peft_config(cfg),
        callbacks=callbacks,
        recorder=recorder,
    )
    if cfg.packing and not cfg.attn_implementation.startswith("flash"):
        # TRL insists on its own collator for packing; keep its packed rows, lay them out as rows.
        trainer.data_collator = PackedCollator(tokenizer.pad_token_id)
    trainer.train(resume_from_checkpoint=resume_from)
    return finish(trainer, cfg, inputs, recorder, resume_from)


def main(argv: list[str] | None = None) -> None:
    stage_cli(SFTConfig, run, argv)


if __name__ == "__main__":
    main()
