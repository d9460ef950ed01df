"""``charops registry``: the model registry: registered versions, their cards and stage history.

    charops registry list                           # names, versions, production and staging
    charops registry show charops-chat              # the latest version's card
    charops registry show charops-chat production   # or a version number, latest, staging
    charops registry history charops-chat --json    # every stage change: who, when, why
    charops registry list --store s3://mlpipeline/charops

``charops models`` is the old name, kept as a hidden alias that says so on stderr (it differed
from ``charops model``, the base models, by one letter).
"""

from __future__ import annotations

from typing import Annotated

import typer

from charops.cli.common import JsonOpt, echo_json, new_app, printable
from charops.cli.store import StoreOpt

HELP = "Registered models: versions, model cards and stage history."
app = new_app(HELP)
# The old group name: the same commands, a note on stderr first (stdout stays parseable).
deprecated_app = new_app(HELP + " Deprecated name: use 'charops registry'.")


@deprecated_app.callback()
def _deprecated() -> None:
    typer.echo("note: 'charops models' is deprecated; use 'charops registry' (same commands)",
               err=True)

NameArg = Annotated[str, typer.Argument(help="Registry name, e.g. charops-chat.", show_default=False)]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Rows as left-aligned columns under a header (what the list/history commands print)."""
    table = [header, *([printable(c) for c in r] for r in rows)]  # cells come from the store
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in table)


def resolve_version(store, name: str, version: str) -> int:
    """A version argument: a number, ``latest``, or a stage (``production``, ``staging``)."""
    from charops.registry import RegistryError, get_entry, version_in

    if version == "latest":
        return get_entry(store, name)["version"]
    if version in ("production", "staging"):
        found = version_in(store, name, version)
        if found is None:
            get_entry(store, name)  # an unknown name says so first
            raise RegistryError(f"'{name}' has no {version} version (see: charops registry "
                                f"history {name})")
        return found
    if version.isascii() and version.isdigit() and not version.startswith("0"):
        return int(version)  # of any size: get_entry says which versions there are
    raise RegistryError(f"version '{version}': use a number, latest, production or staging")


@app.command("list")
def list_(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Every registered name: its versions and which are in production and staging."""
    from charops.registry import get_entry, list_names, list_versions, stages
    from charops.storage import open_store

    st = open_store(store)
    out = []
    for name in list_names(st):
        versions = list_versions(st, name)
        state = stages(st, name)
        out.append({"name": name, "versions": versions, "latest": versions[-1],
                    "production": next((v for v, s in state.items() if s == "production"), None),
                    "staging": sorted(v for v, s in state.items() if s == "staging"),
                    "created_at": get_entry(st, name, versions[-1])["created_at"]})
    if as_json:
        echo_json(out)
        return
    if not out:
        root = getattr(st, "root", None)
        missing = " (no store there yet: the directory does not exist)" if root and not root.exists() else ""
        typer.echo(f"no models registered in {st.url}{missing}")
        return
    rows = [[m["name"], str(len(m["versions"])), str(m["latest"]),
             str(m["production"] or "-"), ",".join(map(str, m["staging"])) or "-",
             m["created_at"]] for m in out]
    typer.echo(format_table(["name", "versions", "latest", "production", "staging",
                             "latest created"], rows))


@app.command()
def show(name: NameArg,
         version: Annotated[str, typer.Argument(help="A version number, latest, production or staging.")] = "latest",
         store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """One version's model card: lineage, characters, training, evaluation, files."""
    from charops.registry import (
        RegistryError,
        card_key,
        check_name,
        entry_markdown,
        get_entry,
        stage_of,
    )
    from charops.registry.card import card_markdown
    from charops.registry.entries import read_card
    from charops.storage import open_store

    st = open_store(store)
    v = resolve_version(st, check_name(name), version)
    entry = get_entry(st, name, v)
    stage = stage_of(st, name, v)
    card = read_card(st, card_key(name, v)) if st.exists(card_key(name, v)) else None
    if as_json:
        echo_json({"entry": entry, "stage": stage, "card": card})
        return
    try:
        # registered before model cards existed: the entry is all there is
        text = entry_markdown(entry) if card is None else card_markdown(card)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        # the checked fields are right, but something nested in them (e.g. the card's
        # eval_summary) was written by hand in another shape
        where = st.url_for(card_key(name, v) if card is not None else f"registry/{name}/{v}.json")
        raise RegistryError(f"{where}: cannot be shown, a nested field has the wrong shape "
                            f"({type(exc).__name__}: {exc}); restore it from a backup") from None
    typer.echo(f"stage: {stage}")
    typer.echo(printable(text, keep="\n"), nl=False)


@app.command()
def history(name: NameArg, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Every stage change of NAME, oldest first: version, stages, who, why, forced or gated."""
    from charops.registry import check_name, get_entry
    from charops.registry import history as stage_history
    from charops.storage import open_store

    st = open_store(store)
    get_entry(st, check_name(name))  # an unknown name is an error, not an empty history
    events = stage_history(st, name)
    if as_json:
        echo_json(events)
        return
    if not events:
        typer.echo(f"{name}: no stage changes yet (promote one: charops promote {name} VERSION "
                   "--to staging)")
        return
    rows = []
    for e in events:
        also = [f"v{c['version']} {c['from']}->{c['to']}" for c in e["changes"][1:]]
        gate = "forced" if e["force"] else ("passed" if e["gate"] else "-")
        rows.append([str(e["seq"]), e["at"], e["kind"], f"v{e['version']}",
                     f"{e['from']}->{e['to']}", ", ".join(also) or "-", gate, e["actor"],
                     e["reason"] or "-"])
    typer.echo(format_table(["seq", "at", "kind", "version", "stage", "also", "gate", "actor",
                             "reason"], rows))


deprecated_app.registered_commands = app.registered_commands
