"""``charops train <stage>``: one command per training stage of ``charops.train.stages.STAGES``.

    charops train pretrain                                  # configs/pretrain/tiny-cpu.yaml
    charops train sft --config tiny-cpu max_steps=20 last_turn_only=true
    charops train dpo --config tiny-cpu --resume auto --json
    charops train reward --config tiny-cpu                  # reward model for the eval stage's judge
    torchrun --nproc-per-node 8 -m charops.train.sft --config qwen2-7b-zero3   # multi-GPU: the module form

Each command runs ``charops.train.<stage>.run`` (the stage's config class and ``run`` come from
``STAGES``, so a new stage gets its command there) and writes OUTPUT_DIR/model and
OUTPUT_DIR/training_summary.json (docs/training.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from charops.cli.common import ConfigOpt, JsonOpt, OverridesArg, QuietOpt, echo_json, new_app
from charops.train.stages import STAGES

app = new_app(f"Train: {', '.join(s.title.lower() for s in STAGES.values())}.")

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


def _stage_command(name: str):
    def command(overrides: OverridesArg = None, config: ConfigOpt = "tiny-cpu", resume: ResumeOpt = None,
                output: OutputOpt = None, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
        stage = STAGES[name]
        _run(stage.config, stage.run, config, overrides, resume, output, as_json, quiet)

    return command


for _name, _stage in STAGES.items():
    app.command(_name, help=_stage.help)(_stage_command(_name))
