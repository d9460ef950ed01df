"""Reward model on the preference pairs (TRL RewardTrainer): the evaluation's local judge.

    charops train reward --config tiny-cpu
    python -m charops.train.reward --config tiny-cpu model=runs/sft/model dataset=runs/dataset

CharacterEval's CharacterRM idea: a scalar head on a chat model, trained on the dataset's
``dpo/train.jsonl`` pairs (context + chosen / rejected character reply) with the Bradley-Terry
loss ``-log sigma(r(x, y_c) - r(x, y_r))``. After training it scores the held-out pairs of
``dpo/validation.jsonl`` and records, in ``training_summary.json`` under ``reward`` (also inside
``model/``):

- ``pair_accuracy``: share of held-out pairs where the chosen reply gets the higher reward
  (reported next to every table the reward-model judge produces);
- ``calibration``: how the eval stage turns a reward into a 1-5 point-wise Overall score:
  linear, the held-out *chosen* replies' mean reward -> 4 and the *rejected* replies' mean ->
  2, rounded and clipped to 1..5 (:func:`charops.eval.judges.calibrated_score`); and
  ``tie_margin``, a quarter of the held-out rewards' standard deviation: a pair-wise
  difference smaller than that is a tie. Without validation pairs the training pairs are used
  (and the summary says so).

The model directory is a Hugging Face sequence-classification model (``num_labels=1``) with
the base model's tokenizer and chat template, loadable by ``AutoModelForSequenceClassification``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

import trl

from charops.errors import ConfigError
from charops.train import arguments
from charops.train.config import TrainConfig, stage_cli
from charops.train.dpo import check_pairs, to_trainer_rows
from charops.train.finish import finish
from charops.train.inputs import prepare_inputs
from charops.train.recorder import RecordingTrainer, RunRecorder


@dataclass
class RewardConfig(TrainConfig):
    """A scalar reward model trained on chosen/rejected character replies."""

    stage: ClassVar[str] = "reward"
    split_dir: ClassVar[str] = "dpo"

    center_rewards_coefficient: float | None = field(default=0.01, metadata={
        "help": "Pulls rewards towards 0 (TRL's center_rewards_coefficient; null: off), so scores of "
                "different runs sit on a comparable scale."})
    score_batch_size: int = field(default=8, metadata={"help": "Replies per forward pass when scoring held-out pairs."})
    train_layers: int = field(default=0, metadata={
        "help": "Train only the last N transformer layers, the final norm and the score head, the rest frozen "
                "(0: every weight). Back-propagation then stops N layers down: a judge for a small CPU budget."})

    def validate(self) -> None:
        super().validate()
        if self.lora.enabled:
            raise ConfigError("reward: lora is not supported for the reward model (its head must be trained "
                              "with the body); set lora.enabled=false")


def score_conversations(model, tokenizer, conversations: list[list[dict]], batch_size: int = 8,
                        share_prefix: bool = True) -> list[float]:
    """Reward of each conversation (its last assistant message being the reply scored).

    Conversations are batched in token order, so the ones that start alike (a character's
    profile, a pair's chosen and rejected reply to the same context, two models' replies to
    the same prompt) sit together; with ``share_prefix`` a batch's common prefix goes through
    the model once and only each conversation's own tokens are computed on top of its cache.
    """
    import torch

    from charops.eval.generate import MIN_SHARED_PREFIX, batches_by_group, shared_prefix

    pad = tokenizer.pad_token_id  # charops.model.load.load_tokenizer always sets one
    model.config.pad_token_id = pad
    encoded = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in conversations]
    device = next(model.parameters()).device
    scores: dict[int, float] = {}
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: encoded[i])
    first = [json.dumps(c[:1], sort_keys=True) for c in conversations]  # the system prompt, if any
    group = (lambda i: first[i]) if share_prefix else (lambda i: 0)
    for rows in batches_by_group(order, group, batch_size):
        batch = [encoded[i] for i in rows]
        common = shared_prefix(batch) if share_prefix and len(batch) > 1 else 0
        # The head reads each row's last non-pad token: a tail of pad ids alone would point it
        # into the prefix, so such a batch is scored in full.
        if common < MIN_SHARED_PREFIX or any(all(t == pad for t in e[common:]) for e in batch):
            common = 0
        cache = None
        if common:
            with torch.no_grad():
                cache = model.base_model(input_ids=torch.tensor([batch[0][:common]], device=device),
                                         use_cache=True).past_key_values
            cache.batch_repeat_interleave(len(batch))
        tails = [e[common:] for e in batch]
        length = max(len(t) for t in tails)
        # Right padding: the classification head reads the last non-pad token of each row.
        ids = torch.full((len(batch), length), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), common + length), dtype=torch.long)
        attn[:, :common] = 1
        for i, t in enumerate(tails):
            ids[i, :len(t)] = torch.tensor(t)
            attn[i, common:common + len(t)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), cache=cache).logits
        for i, v in zip(rows, logits[:, 0].float().cpu(), strict=True):
            scores[i] = float(v)
    return [scores[i] for i in range(len(encoded))]


def calibrate(chosen: list[float], rejected: list[float]) -> dict:
    """Pair accuracy, the linear 1-5 calibration and the tie margin from scored pairs."""
    n = len(chosen)
    mean_c, mean_r = sum(chosen) / n, sum(rejected) / n
    both = chosen + rejected
    mean = sum(both) / len(both)
    sd = math.sqrt(sum((x - mean) ** 2 for x in both) / max(1, len(both) - 1))
    return {"pairs": n, "pair_accuracy": sum(c > r for c, r in zip(chosen, rejected, strict=True)) / n,
            "calibration": {"method": "linear: held-out chosen mean -> 4, rejected mean -> 2, rounded, clipped to 1..5",
                            "chosen_mean": mean_c, "rejected_mean": mean_r},
            "tie_margin": 0.25 * sd, "reward_sd": sd}


def freeze_below(model, layers: int) -> int:
    """Freeze every weight but the last ``layers`` decoder layers, the final norm and the score
    head; returns the number of weights left trainable. Nothing below the lowest trainable layer
    needs a gradient, so autograd stops there."""
    body = model.base_model
    blocks = body.layers
    if not 0 < layers <= len(blocks):
        raise ConfigError(f"reward: train_layers={layers}, but the model has {len(blocks)} layers")
    for p in model.parameters():
        p.requires_grad_(False)
    for module in (*blocks[len(blocks) - layers:], body.norm, model.score):
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class CharopsRewardTrainer(RecordingTrainer, trl.RewardTrainer):
    """TRL's RewardTrainer, counting tokens of every step (both replies of each pair)."""

    def batch_counts(self, model, inputs) -> tuple[int, int, int]:
        tokens = int(inputs["attention_mask"].sum())
        return tokens, tokens, int(inputs["input_ids"].numel())


def run(cfg: RewardConfig, callbacks: list | None = None) -> dict:
    """Train, write output_dir/model and training_summary.json (with ``reward``), return the summary."""
    wall_start = time.time()
    inputs, _ = prepare_inputs(cfg)
    where = f"{inputs.dataset_dir}/dpo"
    check_pairs(inputs.train_rows, f"{where}/train.jsonl")
    check_pairs(inputs.validation_rows, f"{where}/validation.jsonl")
    resume_from = arguments.checkpoint_to_resume(cfg)
    arguments.prepare_run_dir(cfg, resume_from)

    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification

    args = arguments.training_arguments(cfg, max_length=cfg.max_seq_len,
                                        center_rewards_coefficient=cfg.center_rewards_coefficient)
    tokenizer = arguments.load_tokenizer(inputs.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        inputs.model_dir, num_labels=1, dtype=torch.float32, attn_implementation=cfg.attn_implementation)
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.train_layers:
        freeze_below(model, cfg.train_layers)
    trainer = CharopsRewardTrainer(
        model=model, args=args,
        train_dataset=datasets.Dataset.from_list(to_trainer_rows(inputs.train_rows)),
        eval_dataset=(datasets.Dataset.from_list(to_trainer_rows(inputs.validation_rows))
                      if inputs.validation_rows and cfg.evaluate else None),
        processing_class=tokenizer, callbacks=callbacks,
        recorder=RunRecorder(wall_start, progress=cfg.progress))
    trainer.train(resume_from_checkpoint=resume_from)

    held = inputs.validation_rows or inputs.train_rows
    scorer = trainer.accelerator.unwrap_model(trainer.model)
    # One call, so each pair's chosen and rejected reply share their context's forward pass; in
    # bf16 when trained in bf16, as the evaluation's judge then runs it.
    with torch.autocast(scorer.device.type, dtype=torch.bfloat16, enabled=bool(args.bf16)):
        scores = score_conversations(scorer, tokenizer, [r["prompt"] + r[side] for side in ("chosen", "rejected")
                                                         for r in held], cfg.score_batch_size)
    chosen, rejected = scores[:len(held)], scores[len(held):]
    reward = {**calibrate(chosen, rejected), "scored_on": "validation" if inputs.validation_rows else "train"}
    return finish(trainer, cfg, inputs, trainer.recorder, resume_from, {"reward": reward})


def main(argv: list[str] | None = None) -> None:
    stage_cli(RewardConfig, run, argv)


if __name__ == "__main__":
    main()
