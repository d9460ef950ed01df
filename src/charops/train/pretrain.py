"""Continued pretraining: causal LM loss over every token of packed blocks (transformers Trainer).

    charops train pretrain --config tiny-cpu
    python -m charops.train.pretrain --config tiny-cpu max_steps=50
    torchrun --nproc-per-node 8 -m charops.train.pretrain --config qwen2-7b-zero3

L_CLM = -1/n sum_i log P(x_i | x_<i), over the n tokens of the batch that have a predecessor in
their own document.

``charops data prepare`` writes pretrain/train.jsonl as fixed-length blocks of several documents
laid end to end, ``position_ids`` restarting at 0 where each document starts. The collator
(``charops.train.collate.PackedCollator``) hands the model those ``position_ids`` and no
attention mask, so no token attends across a document boundary and positions (RoPE) restart per
document. A document's first token is not a target (label -100): the token before it belongs to
another document.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import transformers

from charops.errors import DataError
from charops.train import arguments
from charops.train.collate import PackedCollator
from charops.train.config import TrainConfig, stage_cli
from charops.train.finish import finish
from charops.train.inputs import check_rows, prepare_inputs
from charops.train.recorder import RecordingTrainer, RunRecorder


@dataclass
class PretrainConfig(TrainConfig):
    """Continued pretraining on character-domain text."""

    stage: ClassVar[str] = "pretrain"
    split_dir: ClassVar[str] = "pretrain"



def check_blocks(rows: list[dict], max_seq_len: int, where: str) -> None:
    check_rows(rows, ("input_ids", "position_ids"), where)
    for i, r in enumerate(rows):
        if len(r["input_ids"]) != len(r["position_ids"]):
            raise DataError(f"{where} row {i + 1}: input_ids and position_ids differ in length; re-run `charops data prepare`")
        if len(r["input_ids"]) > max_seq_len:
            raise DataError(f"{where} row {i + 1}: block of {len(r['input_ids'])} tokens exceeds max_seq_len "
                            f"{max_seq_len}; prepare with a smaller block size or raise max_seq_len")


class CharopsPretrainTrainer(RecordingTrainer, transformers.Trainer):
    """transformers' Trainer, counting tokens and targets of every training micro-batch."""


def run(cfg: PretrainConfig, callbacks: list | None = None) -> dict:
    """Train, write output_dir/model and training_summary.json, return the summary."""
    wall_start = time.time()
    inputs, _ = prepare_inputs(cfg)
    check_blocks(inputs.train_rows, cfg.max_seq_len, f"{inputs.dataset_dir}/pretrain/train.jsonl")
    check_blocks(inputs.validation_rows, cfg.max_seq_len, f"{inputs.dataset_dir}/pretrain/validation.jsonl")
    resume_from = arguments.checkpoint_to_resume(cfg)
    arguments.prepare_run_dir(cfg, resume_from)

    import datasets

    # remove_unused_columns would drop position_ids' siblings the collator needs (labels, if given).
    args = arguments.training_arguments(cfg, remove_unused_columns=False)
    tokenizer = arguments.load_tokenizer(inputs.model_dir)
    model = arguments.load_model(inputs.model_dir, cfg, args.bf16)
    lora = arguments.peft_config(cfg)
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora)
        if cfg.gradient_checkpointing:  # the frozen embedding output must carry grad for checkpointing
            model.enable_input_require_grads()
    keep = ["input_ids", "position_ids", "labels"]
    train = datasets.Dataset.from_list([{k: r[k] for k in keep if k in r} for r in inputs.train_rows])
    val = datasets.Dataset.from_list([{k: r[k] for k in keep if k in r} for r in inputs.validation_rows])
    trainer = CharopsPretrainTrainer(
        model=model,
        args=args,
        data_collator=PackedCollator(tokenizer.pad_token_id),
        train_dataset=train,
        eval_dataset=val if len(val) and cfg.evaluate else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        recorder=RunRecorder(wall_start, progress=cfg.progress),
    )
    trainer.train(resume_from_checkpoint=resume_from)
    return finish(trainer, cfg, inputs, trainer.recorder, resume_from)


def main(argv: list[str] | None = None) -> None:
    stage_cli(PretrainConfig, run, argv)


if __name__ == "__main__":
    main()
