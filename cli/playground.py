"""``charops playground``: chat, arena and leaderboard in a browser, on 127.0.0.1.

    charops playground charops-chat                        # the production version
    charops playground charops-chat --version 3 --arena production
    charops playground charops-chat --arena staging        # production vs staging, blind
    charops playground charops-chat --model runs/dpo/model --arena-model runs/sft/model

Open the printed URL. Every swipe, edit, thumb, star and vote is a feedback event in the
store (``charops feedback export`` turns them into DPO/KTO data); see docs/playground.md.
"""

from __future__ import annotations

from typing import Annotated

import typer

from charops.cli.arena import ArenaModelOpt, ArenaOpt, arena_opponent, registry_ref
from charops.cli.common import JsonOpt, ServeQuietOpt
from charops.cli.store import StoreOpt
from charops.errors import CharopsError


def playground(
    name: Annotated[str, typer.Argument(help="Registry name (feedback is filed under it).")],
    version: Annotated[str | None, typer.Option("--version", help="Chat with this version or stage (default: production).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Chat with this model directory instead of a registry version.", show_default=False)] = None,
    arena: ArenaOpt = None,
    arena_model: ArenaModelOpt = None,
    store: StoreOpt = None,
    bind: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback exposes it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8080,
    max_tokens_cap: Annotated[int, typer.Option("--max-tokens-cap", help="Largest max_tokens a request may ask for.")] = 512,
    default_max_tokens: Annotated[int, typer.Option("--default-max-tokens", help="Reply length when the page gives none.")] = 128,
    as_json: JsonOpt = False,
    quiet: ServeQuietOpt = False,
) -> None:
    """Serve the playground: chat with a character, compare two versions blind, rank them.

    With --json the ready line is one JSON object (name, url, openai_base_url, arena) on stdout.
    """
    from charops.registry import check_name
    from charops.registry.download import local_model_dir
    from charops.serve.playground.standalone import serve_playground
    from charops.serve.server import ServeConfig
    from charops.storage import open_store

    check_name(name)
    if model is not None and version is not None:
        raise CharopsError("pass --model DIR or --version V, not both")
    st = open_store(store)
    chat_version = None
    if model is None:
        chat_version = registry_ref(st, name, version) if version is not None else None
        model_dir, entry = local_model_dir(store, name, str(chat_version) if chat_version else None)
        chat_version = int(entry["version"])
        model = str(model_dir)
    opponent = arena_opponent(store, name, arena, arena_model, chat_version)
    cfg = ServeConfig(model_dir=model, name=name, host=bind, port=port,
                      max_tokens_cap=max_tokens_cap, default_max_tokens=min(default_max_tokens, max_tokens_cap))
    if not quiet and not as_json:
        typer.echo(f"loading {model}" + (f" and {opponent.model_dir}" if opponent else "") + " ...", err=True)
    serve_playground(cfg, store=st, version=chat_version, opponent=opponent, ready_json=as_json)
