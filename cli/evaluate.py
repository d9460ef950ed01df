"""`charops eval`: evaluate models (CharacterGLM protocol), render reports, work with people.

    charops eval run                                  # configs/eval/default.yaml: runs/dpo/model vs runs/base
    charops eval run judge=openai judge_model=gpt-4o-mini -q
    charops eval report runs/eval                     # re-render report.md, report.html, headline.json, metrics.json
    charops eval export-human runs/eval --out runs/human/tasks
    charops eval import-human runs/human/tasks.key.json alice.csv bob.jsonl --out runs/human/results
    charops eval heldout model=runs/sft dataset=runs/dataset output_dir=runs/eval-heldout

(The module is ``evaluate``: a module named ``eval`` would shadow the builtin where imported.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charops.cli.common import ConfigOpt, JsonOpt, OverridesArg, QuietOpt, echo_json, new_app

app = new_app("Evaluate models: generated replies judged point-wise and pair-wise (CharacterGLM), "
              "reports, human rating tasks, held-out loss.")

OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder to write (new or empty).")]


def _headline(summary: dict) -> None:
    from charops.eval.report import headline_metrics, judge_text

    typer.echo(f"judge: {judge_text(summary.get('judge'))}")
    head = headline_metrics(summary)
    if "pairwise_advantage" in head:
        typer.echo(f"pair-wise vs baseline: win {head['pairwise_win']:.1f}%  tie {head['pairwise_tie']:.1f}%  "
                   f"lose {head['pairwise_lose']:.1f}%  Advantage {head['pairwise_advantage']:+.1f}  "
                   f"(n {int(head['pairwise_n'])}, sign-test p {head.get('pairwise_sign_test_p', float('nan')):.3g})")
    for side in ("candidate", "baseline"):
        if f"pointwise_overall_{side}" in head:
            typer.echo(f"point-wise Overall, {side}: {head[f'pointwise_overall_{side}']:.2f}")
    if "loss" in head:
        typer.echo(f"loss {head['loss']:.4f}" + (f"  (baseline {head['baseline_loss']:.4f})"
                                                  if "baseline_loss" in head else ""))
    for reason in summary.get("skipped") or []:
        typer.echo(f"skipped: {reason}")


@app.command()
def run(
    overrides: OverridesArg = None,
    config: ConfigOpt = "default",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate replies (candidate and baseline), judge them (judge=reward_model|openai|none),
    aggregate and write the results dir: replies/pointwise/pairwise.jsonl, eval_summary.json,
    report.md, report.html."""
    from charops.config import load_config
    from charops.eval.report import write_reports
    from charops.eval.run import EvalConfig
    from charops.eval.run import run as run_eval

    cfg = load_config(EvalConfig, config, [*(overrides or []), f"progress={not quiet}"])
    summary = run_eval(cfg)
    paths = write_reports(cfg.output_dir)
    if as_json:
        echo_json(summary)
        return
    if quiet:
        return
    _headline(summary)
    typer.echo(f"report: {paths['markdown']}  {paths['html']}")


@app.command()
def report(
    results_dir: Annotated[Path, typer.Argument(help="Results directory of `charops eval run` (or `import-human`).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where the reports go (default: the results directory).", show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", help="Sample prompts shown in the reports.")] = 40,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Re-render report.md, report.html, headline.json and metrics.json from a results directory (no
    generating or judging)."""
    from charops.eval.report import headline_metrics, write_reports
    from charops.eval.summary import read_eval_summary

    paths = write_reports(results_dir, out, max_samples=samples)
    summary = read_eval_summary(results_dir / "eval_summary.json")
    if as_json:
        echo_json({"paths": {k: str(v) for k, v in paths.items()}, "headline": headline_metrics(summary)})
        return
    if quiet:
        return
    _headline(summary)
    typer.echo(f"report: {paths['markdown']}  {paths['html']}")


@app.command("export-human")
def export_human(
    results_dir: Annotated[Path, typer.Argument(help="Results directory of `charops eval run` (its replies.jsonl).")],
    out: OutDirOpt,
    key: Annotated[Path | None, typer.Option("--key", help="Key file (which model wrote what); must be outside --out. Default: <out>.key.json.", show_default=False)] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="Task kinds: pointwise, pairwise, turing (repeat; default all).", show_default=False)] = None,
    rubric: Annotated[str, typer.Option("--rubric", help="Rubric whose dimensions and anchors people score by.")] = "characterglm-v1",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shuffles.")] = 0,
    max_items: Annotated[int, typer.Option("--max-items", help="At most this many prompts (0 = all).")] = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write blind, shuffled rating tasks (CSV and JSONL) and instructions for people; the key
    that un-blinds them goes to a separate file."""
    from charops.eval.human import TASKS
    from charops.eval.human import export_human as export

    info = export(results_dir, out, key_path=key, tasks=task or TASKS, rubric=rubric, seed=seed,
                  max_items=max_items)
    if as_json:
        echo_json(info)
        return
    if quiet:
        return
    counts = ", ".join(f"{n} {t}" for t, n in info["counts"].items())
    typer.echo(f"tasks: {info['out']} ({counts}); key (keep it from the annotators): {info['key']}")


@app.command("import-human")
def import_human(
    key: Annotated[Path, typer.Argument(help="Key file written by export-human.")],
    files: Annotated[list[Path], typer.Argument(help="Filled-in task files (CSV or JSONL), one annotator each.")],
    out: OutDirOpt,
    results: Annotated[Path | None, typer.Option("--results", help="Results directory the tasks came from (default: the one the key names).", show_default=False)] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Read annotations back: agreement (Cohen's/Fleiss' kappa, Krippendorff's alpha), the
    Turing test, and the point-wise/pair-wise tables with people as the judge."""
    from charops.eval.human import import_human as read_back

    summary = read_back(key, files, out, results_dir=results)
    if as_json:
        echo_json(summary)
        return
    if quiet:
        return
    _headline(summary)
    for source, block in (summary.get("turing") or {}).items():
        typer.echo(f"Turing test: {source} taken for a person in {block['taken_for_human_pct']:.1f}% "
                   f"of {block['judgements']} judgements")
    typer.echo(f"report: {out / 'report.md'}  {out / 'report.html'}")


@app.command()
def heldout(
    overrides: OverridesArg = None,
    config: ConfigOpt = "heldout",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Response-token loss / perplexity on the validation split (overall, per category, per
    topic), in-character preference accuracy and sample replies; writes metrics.json and
    report.md into output_dir."""
    from charops.config import load_config
    from charops.eval.heldout import HeldoutEvalConfig
    from charops.eval.heldout import run as run_heldout

    metrics = run_heldout(load_config(HeldoutEvalConfig, config, overrides or []))
    if as_json:
        echo_json({k: v for k, v in metrics.items() if k != "config"})
        return
    if quiet:
        return
    model = metrics["model"]
    typer.echo(f"loss {model['loss']:.4f}  perplexity {model['perplexity']:.2f}  "
               f"({model['tokens']} tokens, {model['examples']} dialogues)")
    if "baseline" in metrics:
        typer.echo(f"baseline loss {metrics['baseline']['loss']:.4f}  change {metrics['loss_delta']:+.4f}")
    typer.echo(f"preference accuracy {model['preference']['accuracy']:.3f} "
               f"of {model['preference']['pairs']} pairs")
    typer.echo(f"report: {metrics['config']['output_dir']}/report.md")
