"""``charops feedback``: what people did with a served character, as training data.

    charops feedback export --model charops-chat --since 2026-12-01 --format dpo --out data/fb
    charops feedback export --model charops-chat --format kto --out data/fb-kto
    charops feedback import chats/林小满/ --from sillytavern --model charops-chat
    charops feedback import feedback.json --from open-webui --model charops-chat

Events are stored by the playground (``charops playground``, ``charops deploy --local``) under
``feedback/<model>/events/`` in the artifact store; see docs/feedback.md for the schema and the
mapping from actions to DPO pairs and KTO rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charops.cli.common import JsonOpt, QuietOpt, echo_json, new_app
from charops.cli.store import StoreOpt

app = new_app("Feedback events: export them as DPO/KTO data, import SillyTavern and Open WebUI feedback.")


def _print_sources(sources: dict, noun: str) -> None:
    for name, c in sources.items():
        dropped = c.get("dropped", c.get("skipped", {}))
        used = c.get("used", c.get("events"))
        typer.echo(f"  {name}: read {c['read']} = {noun} {used} + dropped {sum(dropped.values())}")
        for reason, n in dropped.items():
            typer.echo(f"    {n:>5}  {reason}")


@app.command("export")
def export_cmd(
    model: Annotated[str, typer.Option("--model", help="Registry name whose events to export.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Output directory (FORMAT/{train,validation}.jsonl, feedback_summary.yaml).", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="dpo (pairs) or kto (unpaired rows with labels).")] = "dpo",
    since: Annotated[str | None, typer.Option("--since", help="Only events at or after this day (2026-12-01) or time (ISO 8601).", show_default=False)] = None,
    validation_fraction: Annotated[float, typer.Option("--validation-fraction", help="Share of conversations held out for validation.")] = 0.1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write MODEL's feedback events as TRL conversational DPO pairs or KTO rows."""
    from charops.feedback.export import export
    from charops.storage import open_store

    summary = export(open_store(store), model, fmt, out, since=since,
                     validation_fraction=validation_fraction, overwrite=overwrite)
    if as_json:
        echo_json(summary)
    elif not quiet:
        typer.echo(f"{out}: {summary['rows']['train']} train + {summary['rows']['validation']} "
                   f"validation {fmt} rows from {summary['used']} of {summary['read']} events")
        _print_sources(summary["sources"], "used")


@app.command("import")
def import_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to import.", show_default=False)],
    source: Annotated[str, typer.Option("--from", help="sillytavern (chat JSONL) or open-webui (feedback export JSON).", show_default=False)],
    model: Annotated[str, typer.Option("--model", help="Registry name the feedback is about.", show_default=False)],
    version: Annotated[int | None, typer.Option("--version", help="The version that generated the replies, when known.", show_default=False)] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Turn SillyTavern swipes or Open WebUI ratings into feedback events in the store."""
    from charops.feedback.importers import import_events
    from charops.feedback.store import append_event
    from charops.registry import check_name
    from charops.storage import open_store

    check_name(model)
    events, report = import_events(paths, source, model, version=version)
    st = open_store(store)
    status = {"created": 0, "duplicate": 0}
    for event in events:
        status[append_event(st, event)["status"]] += 1
    summary = {"files": report, "events": len(events), **status, "store": st.url}
    if as_json:
        echo_json(summary)
    elif not quiet:
        typer.echo(f"{len(events)} event(s): {status['created']} new, {status['duplicate']} already stored")
        _print_sources(report, "events")
