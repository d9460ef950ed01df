"""``charops schedule``: run a compiled pipeline on a cron schedule on a Kubeflow cluster.

    charops schedule pipelines/feedback.yaml --cron "0 3 * * 1" --param feedback_format=kto
    charops schedule list
    charops schedule delete RECURRING_RUN_ID

The parameters are those of ``charops submit`` (``--param key=value``, ``--preset``); the
compiled pipeline version is uploaded first when the server lacks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charops.cli.common import (
    HostOpt,
    JsonOpt,
    NamespaceOpt,
    QuietOpt,
    TokenOpt,
    echo_json,
    new_app,
)
from charops.cli.pipeline import ParamOpt, spec_and_params

app = new_app("Recurring runs (cron) of a compiled pipeline on Kubeflow: create, list, delete.")


@app.command("create")
def create(
    pipeline: Annotated[Path, typer.Argument(help="Compiled pipeline YAML, e.g. pipelines/feedback.yaml.")],
    cron: Annotated[str, typer.Option("--cron", help="Cron expression: 5 fields ('0 3 * * 1': Mondays 03:00) or KFP's 6.", show_default=False)],
    param: ParamOpt = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Run preset: pipeline parameters from configs/run/NAME.yaml; --param wins.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of the recurring run (default: pipeline name and cron).", show_default=False)] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="Kubeflow experiment (created if missing).")] = "charops",
    host: HostOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Create a recurring run of PIPELINE with the given parameters."""
    from charops.pipeline.client import connect
    from charops.pipeline.schedule import create_schedule
    from charops.pipeline.spec import parse_params

    spec, param = spec_and_params(pipeline, param, preset)
    values = parse_params(spec, param)
    if "pipeline_version" in spec.parameters and "pipeline_version" not in values:
        values["pipeline_version"] = spec.version or ""
    s = create_schedule(connect(host, token, namespace), pipeline, cron, values,
                        experiment=experiment, name=name)
    if as_json:
        echo_json(s)
    elif not quiet:
        typer.echo(f"scheduled '{s['name']}' ({s['cron']}): recurring run {s['id']}")


@app.command("list")
def list_cmd(
    experiment: Annotated[str | None, typer.Option("--experiment", help="Only this experiment's.", show_default=False)] = None,
    host: HostOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the recurring runs."""
    from charops.pipeline.client import connect
    from charops.pipeline.schedule import list_schedules

    items = list_schedules(connect(host, token, namespace), experiment)
    if as_json:
        echo_json(items)
        return
    for s in items:
        typer.echo(f"{s['id']}  {s['cron'] or '-':<16}  {s['status'] or '-':<10}  {s['name']}")
    if not items:
        typer.echo("no recurring runs")


@app.command("delete")
def delete(
    schedule_id: Annotated[str, typer.Argument(help="Recurring run id (charops schedule list).")],
    host: HostOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete a recurring run (runs it already started are kept)."""
    from charops.pipeline.client import connect
    from charops.pipeline.schedule import delete_schedule

    delete_schedule(connect(host, token, namespace), schedule_id)
    if as_json:
        echo_json({"deleted": schedule_id})
    elif not quiet:
        typer.echo(f"deleted recurring run {schedule_id}")
