"""The run record: token totals kept in the Trainer's log history, timing, and the Trainer mixin.

Public names::

    from charops.train.recorder import RecordingTrainer, RunRecorder, count_tokens

    class CharopsRewardTrainer(RecordingTrainer, trl.RewardTrainer):
        def batch_counts(self, model, inputs):          # optional: the default is count_tokens
            return tokens, supervised, slots
    trainer = CharopsRewardTrainer(model=..., args=..., recorder=RunRecorder(wall_start))
    trainer.train()
    trainer.recorder.throughput()                       # tokens/s of this run, padding fraction

Every stage's Trainer is ``RecordingTrainer`` mixed in before the transformers/TRL Trainer it
extends: it takes ``recorder=``, counts every training micro-batch (``batch_counts``) and puts
the running totals (``tokens_seen``, ``supervised_tokens``) into every log entry, so they survive
a checkpoint/resume. Progress goes to stderr, one line per step; stdout is for the summary.
"""

from __future__ import annotations

import sys
import time

from transformers import PrinterCallback, TrainerCallback

from charops.data.tokenize import IGNORE_INDEX


def count_tokens(inputs: dict) -> tuple[int, int, int]:
    """(tokens, supervised tokens, slots) of a causal-LM micro-batch.

    tokens excludes padding; slots is the batch tensor's size (padding included); supervised
    counts targets, labels shifted as the loss shifts them (the first is never predicted).
    """
    import torch

    slots = int(inputs["input_ids"].numel())
    tokens = int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else slots
    supervised = int(torch.count_nonzero(inputs["labels"][..., 1:] != IGNORE_INDEX))
    return tokens, supervised, slots


class RunRecorder(TrainerCallback):
    """TrainerCallback keeping token totals in the log history (so they survive a resume) and timing.

    A stage's trainer calls :meth:`count` for every training micro-batch; the totals are summed over
    ranks and written into every log entry as ``tokens_seen`` and ``supervised_tokens``.
    """

    def __init__(self, wall_start: float | None = None, progress: bool = True) -> None:
        self.progress = progress  # print a line per logged step on stderr
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
            if state.is_world_process_zero and self.progress:  # progress on stderr: stdout is for the summary (--json)
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


class RecordingTrainer:
    """Mixin (first base) of a stage's Trainer: takes ``recorder=`` and counts every micro-batch.

    ``batch_counts`` says what a micro-batch holds (tokens, supervised tokens, slots); it runs for
    validation batches too, so a stage can refuse a bad batch there (SFT refuses one with no
    supervised token), but only training batches are added to the totals.
    """

    def __init__(self, *args, recorder: RunRecorder, **kwargs):
        super().__init__(*args, **kwargs)
        from charops.train.lm_head import compact_lm_heads

        compact_lm_heads(self)  # TRL's fused LM head projects every position on a CPU: only labelled ones
        self.recorder = recorder
        recorder.accelerator = self.accelerator
        self.add_callback(recorder)
        # The recorder prints progress to stderr; Trainer's printer would put dicts on stdout.
        self.remove_callback(PrinterCallback)

    def batch_counts(self, model, inputs) -> tuple[int, int, int]:
        """(tokens, supervised tokens, slots) of ``inputs``; a causal-LM batch by default."""
        return count_tokens(inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        counts = self.batch_counts(model, inputs)
        if model.training:
            self.recorder.count(*counts)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
