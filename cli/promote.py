"""``charops promote``: move a registered version to staging or production through the gate.

The gate (``charops.registry.gate``, margins in ``configs/promote/default.yaml``) promotes only
when the version's evaluation beats the production version (the base model when there is
none); a refusal prints the table that decided it and exits 1. ``--force --reason`` overrides
it, and the stage history records who and why::

    charops promote charops-chat 3 --to staging
    charops promote charops-chat 3 --to production min_advantage=10 alpha=0.01
    charops promote charops-chat 3 --to production --eval-summary runs/eval-v3-vs-v2/eval_summary.json
    charops promote charops-chat 3 --to production --force --reason "judge drifted; people agree"
    charops registry history charops-chat
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charops.cli.common import (
    ConfigOpt,
    JsonOpt,
    OverridesArg,
    QuietOpt,
    echo_json,
    error_line,
    printable,
)
from charops.cli.store import StoreOpt


def promote(
    name: Annotated[str, typer.Argument(help="Registry name, e.g. charops-chat.", show_default=False)],
    version: Annotated[str, typer.Argument(help="The version number to promote.", show_default=False)],
    to: Annotated[str, typer.Option("--to", help="Target stage: staging or production.", show_default=False)],
    overrides: OverridesArg = None,
    config: ConfigOpt = "default",
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate refuses (needs --reason).")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded in the stage history.")] = "",
    actor: Annotated[str | None, typer.Option("--actor", help="Who is promoting (default: $CHAROPS_ACTOR, else the login name).", show_default=False)] = None,
    eval_summary: Annotated[Path | None, typer.Option("--eval-summary", help="Judge by this eval_summary.json (e.g. a later evaluation against the production model) instead of the one on the version's card.", show_default=False)] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Promote NAME VERSION to staging or production if its evaluation passes the gate."""
    from charops.config import load_config
    from charops.registry import check_name, current_actor, stage_of
    from charops.registry.gate import GateConfig, gate_table, read_eval_summary
    from charops.registry.gate import promote as gated_promote
    from charops.storage import open_store

    cfg = load_config(GateConfig, config, list(overrides or []))
    summary = read_eval_summary(eval_summary) if eval_summary is not None else None
    st = open_store(store)
    already = stage_of(st, check_name(name), version) == to
    decision, event = gated_promote(st, check_name(name), version, to,
                                    actor=actor or current_actor(), reason=reason,
                                    config=cfg, force=force, summary=summary)
    if as_json:
        echo_json({"promoted": event is not None, "decision": decision, "event": event})
    elif decision is not None and not quiet:
        typer.echo(printable(gate_table(decision), keep="\n"), nl=False)
    if event is None:
        where = ("decision in the JSON" if as_json else "run without -q to see its table" if quiet
                 else "table above")
        error_line(f"{name} v{version} not promoted to {to}: the gate refused ({where}); "
                   "pass --force --reason \"...\" to override")
        raise typer.Exit(1)
    if as_json or quiet:
        return
    if already:
        typer.echo(f"{name} v{event['version']} is {to} already (since event {event['seq']})")
    else:
        forced = " (forced past the gate)" if event["force"] else ""
        others = [f"v{c['version']} -> {c['to']}" for c in event["changes"][1:]]
        typer.echo(f"{name} v{event['version']}: {event['from']} -> {event['to']}{forced}"
                   + (f"; {', '.join(others)}" if others else "")
                   + f" (event {event['seq']}, by {printable(event['actor'])})")

