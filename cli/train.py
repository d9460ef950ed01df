"""``charops train``: the three training stages (continued pretraining, SFT, DPO).

    charops train pretrain                                  # configs/pretrain/tiny-cpu.yaml
    charops train sft --config tiny-cpu max_steps=20 last_turn_only=true
    charops train dpo --config tiny-cpu --resume auto --json
    charops train reward --config tiny-cpu                  # reward model for the eval stage's judge
    torchrun --nproc-per-node 8 -m charops.train.sft --config qwen2-7b-zero3   # multi-GPU: the module form

Each command runs ``charops.train.<stage>.run`` and writes OUTPUT_DIR/model and
OUTPUT_DIR/training_summary.json (docs/training.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from charops.cli.common import ConfigOpt, JsonOpt, OverridesArg, QuietOpt, echo_json, new_app

app = new_app("Train: continued pretraining, multi-turn SFT, DPO, reward model.")

ResumeOpt = Annotated[str | None, typer.Option(
    "--resume", help="auto: continue from the newest checkpoint in OUTPUT_DIR/checkpoints; never; or a checkpoint path.")]
OutputOpt = Annotated[str | None, typer.Option("--output", "-o", help="Run directory (overrides output_dir).")]


def _run(cls: type, run, config: str, overrides: list[str] | None, resume: str | None, output: str | None,
         as_json: bool, quiet: bool = False) -> None:
    from charops.config import load_config

    extra = list(overrides or [])
    if resume:
        extra.append(f"resume={resume}")
    if output:
        extra.append(f"output_dir={output}")
    if quiet:
        extra.append("progress=false")
    summary = run(load_config(cls, config, extra))
    if as_json:
        echo_json(summary)
        return
    if quiet:
        return
    typer.echo(f"{cls.stage}: {summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
               f"{summary['tokens_seen']:,} tokens ({summary['supervised_tokens']:,} supervised), "
               f"{summary['tokens_per_second'] or 0:,.0f} tokens/s")
    if "rewards" in summary:
        r = summary["rewards"]["final"]
        typer.echo(f"  rewards: chosen {r['chosen']:.4f}, rejected {r['rejected']:.4f}, "
                   f"margin {r['margins']:.4f}, accuracy {r['accuracies']:.2f}")
    if "reward" in summary:
        r = summary["reward"]
        typer.echo(f"  held-out pair accuracy {r['pair_accuracy']:.3f} of {r['pairs']} pairs ({r['scored_on']}), "
                   f"tie margin {r['tie_margin']:.4f}")
    typer.echo(f"  model: {summary['model_dir']}")


@app.command("pretrain")
def pretrain(overrides: OverridesArg = None, config: ConfigOpt = "tiny-cpu", resume: ResumeOpt = None,
             output: OutputOpt = None, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Continued pretraining: causal LM loss over every token of packed blocks."""
    from charops.train.pretrain import PretrainConfig, run

    _run(PretrainConfig, run, config, overrides, resume, output, as_json, quiet)


@app.command("sft")
def sft(overrides: OverridesArg = None, config: ConfigOpt = "tiny-cpu", resume: ResumeOpt = None,
        output: OutputOpt = None, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Multi-turn SFT: loss on every assistant turn (last_turn_only=true: the last one)."""
    from charops.train.sft import SFTConfig, run

    _run(SFTConfig, run, config, overrides, resume, output, as_json, quiet)


@app.command("dpo")
def dpo(overrides: OverridesArg = None, config: ConfigOpt = "tiny-cpu", resume: ResumeOpt = None,
        output: OutputOpt = None, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """DPO against the SFT model (ref_model); logs rewards/chosen, rejected, margins, accuracies."""
    from charops.train.dpo import DPOConfig, run

    _run(DPOConfig, run, config, overrides, resume, output, as_json, quiet)


@app.command("reward")
def reward(overrides: OverridesArg = None, config: ConfigOpt = "tiny-cpu", resume: ResumeOpt = None,
           output: OutputOpt = None, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Reward model on the preference pairs (TRL RewardTrainer): the eval stage's local judge."""
    from charops.train.reward import RewardConfig, run

    _run(RewardConfig, run, config, overrides, resume, output, as_json, quiet)
