"""`charops runs`: the ops view of pipeline runs on Kubeflow Pipelines.

    charops runs list --host http://localhost:8080 [--experiment charops] [--limit 20]
    charops runs get RUN_ID --json
    charops runs wait RUN_ID --timeout 3600     # exit 0 on success, 1 on failure
"""

from __future__ import annotations

import datetime as dt
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

app = new_app("List, inspect and wait for pipeline runs on Kubeflow Pipelines.")

RunIdArg = Annotated[str, typer.Argument(help="Run ID (as printed by `charops submit` / `runs list`).")]


def print_status_change(status) -> None:
    """One line per state change (shared with `charops submit --wait`)."""
    now = dt.datetime.now().strftime("%H:%M:%S")
    extra = f"  {status.error}" if status.error else ""
    typer.echo(f"{now}  run {status.run_id}  {status.state}{extra}")


@app.command("list")
def list_(
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Only runs of this experiment.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many runs (newest first).")] = 20,
    host: HostOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List recent runs, newest first."""
    from charops.pipeline.client import connect

    runs = connect(host, token, namespace).list_runs(experiment=experiment, limit=limit)
    if as_json:
        echo_json([r.to_dict() for r in runs])
        return
    if not runs:
        typer.echo("no runs")
        return
    typer.echo(f"{'RUN ID':<34}  {'STATE':<10}  {'CREATED':<20}  NAME")
    for r in runs:
        typer.echo(f"{r.run_id:<34}  {r.state:<10}  {(r.created_at or '')[:19]:<20}  {r.name}")


@app.command()
def get(run_id: RunIdArg, host: HostOpt = None, token: TokenOpt = None,
        namespace: NamespaceOpt = None, as_json: JsonOpt = False) -> None:
    """Show one run: state, times, error and its Kubeflow UI URL."""
    from charops.pipeline.client import connect

    status = connect(host, token, namespace).get_run(run_id)
    if as_json:
        echo_json(status.to_dict())
        return
    for key, value in status.to_dict().items():
        if value is not None:
            typer.echo(f"{key:<14} {value}")


@app.command()
def wait(
    run_id: RunIdArg,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Give up after this many seconds (default: wait forever).")] = None,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between status checks.")] = 10.0,
    host: HostOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Follow a run until it finishes; exit 0 if it succeeded, 1 if it failed."""
    from charops.pipeline.client import connect

    final = connect(host, token, namespace).wait_run(
        run_id, timeout=timeout, on_status=None if as_json or quiet else print_status_change, poll_s=poll)
    if as_json:
        echo_json(final.to_dict())
    elif not quiet:
        typer.echo(f"run {final.run_id} {final.state}: {final.url}")
    raise typer.Exit(final.exit_code)
