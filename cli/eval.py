"""`charops eval`: measure trained models.

    charops eval heldout model=runs/sft dataset=runs/dataset output_dir=runs/eval baseline_model=runs/base
"""

from __future__ import annotations

import typer

from charops.cli.common import ConfigOpt, JsonOpt, OverridesArg, echo_json, new_app

app = new_app("Evaluate models: held-out loss per category and topic, preference accuracy, samples.")


@app.command()
def heldout(
    overrides: OverridesArg = None,
    config: ConfigOpt = "heldout",
    as_json: JsonOpt = False,
) -> None:
    """Response-token loss / perplexity on the validation split (overall, per category, per
    topic), in-character preference accuracy and sample replies; writes metrics.json and
    report.md into output_dir."""
    from charops.config import load_config
    from charops.eval.heldout import HeldoutEvalConfig, run

    metrics = run(load_config(HeldoutEvalConfig, config, overrides or []))
    if as_json:
        echo_json({k: v for k, v in metrics.items() if k != "config"})
        return
    model = metrics["model"]
    typer.echo(f"loss {model['loss']:.4f}  perplexity {model['perplexity']:.2f}  "
               f"({model['tokens']} tokens, {model['examples']} dialogues)")
    if "baseline" in metrics:
        typer.echo(f"baseline loss {metrics['baseline']['loss']:.4f}  change {metrics['loss_delta']:+.4f}")
    typer.echo(f"preference accuracy {model['preference']['accuracy']:.3f} "
               f"of {model['preference']['pairs']} pairs")
    typer.echo(f"report: {metrics['config']['output_dir']}/report.md")
