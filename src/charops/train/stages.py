"""The training stages, named once: every place that lists stages reads this mapping.

    from charops.train.stages import STAGES
    stage = STAGES["reward"]
    summary = stage.run(load_config(stage.config, "tiny-cpu", ["max_steps=5"]))

Read by ``charops train`` (one command per stage), ``charops.train.launch`` (the module
``torchrun`` starts, the stages a TrainJob node accepts), the training components'
``run_training`` and ``training_arguments`` (the Trainer arguments class of each stage). A
new stage is a module ``charops.train.<name>`` with a config dataclass (a ``TrainConfig``
whose ``stage`` is ``<name>``), ``run(config) -> summary`` and ``main`` (``python -m``),
plus one entry here.

The stage modules import TRL and transformers, so an entry names them and imports them
only when ``config``, ``run`` or ``arguments`` is read: listing stages stays cheap (CLI start-up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str
    config_class: str  # the config dataclass, in charops.train.<name>
    arguments_class: str  # the Trainer's arguments class, "package.Name"
    title: str  # headline of the stage's report (the component's Markdown)
    help: str  # one line: `charops train <name> --help`, the training docs

    @property
    def module(self) -> str:
        """The stage's module: ``run``, its config and ``main`` (``python -m`` / ``torchrun -m``)."""
        return f"charops.train.{self.name}"

    @property
    def config(self) -> type:
        return getattr(import_module(self.module), self.config_class)

    @property
    def run(self) -> Callable[..., dict[str, Any]]:
        return import_module(self.module).run

    @property
    def arguments(self) -> type:
        package, _, name = self.arguments_class.rpartition(".")
        return getattr(import_module(package), name)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("pretrain", "PretrainConfig", "transformers.TrainingArguments", "Continued pretraining",
          "Continued pretraining: causal LM loss over every token of packed blocks."),
    Stage("sft", "SFTConfig", "trl.SFTConfig", "Supervised fine-tuning",
          "Multi-turn SFT: loss on every assistant turn (last_turn_only=true: the last one)."),
    Stage("dpo", "DPOConfig", "trl.DPOConfig", "Direct preference optimisation",
          "DPO against the SFT model (ref_model); logs rewards/chosen, rejected, margins, accuracies."),
    Stage("reward", "RewardConfig", "trl.RewardConfig", "Reward model",
          "Reward model on the preference pairs (TRL RewardTrainer): the eval stage's local judge."),
    Stage("kto", "KTOConfig", "trl.KTOConfig", "Kahneman-Tversky optimisation",
          "KTO on unpaired feedback (liked/disliked replies, TRL KTOTrainer): charops feedback export --format kto."),
)}


def stage_named(name: str) -> Stage:
    """``STAGES[name]``, or a ConfigError naming the stages there are."""
    from charops.errors import ConfigError

    if name not in STAGES:
        raise ConfigError(f"no training stage '{name}' (known: {', '.join(STAGES)})")
    return STAGES[name]
