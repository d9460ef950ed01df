"""``charops serve``: serve a model on this machine (a KServe model server on 127.0.0.1).

    charops serve charops-chat                          # the registry's production version
    charops serve charops-chat --version 3              # a given registry version
    charops serve runs/dpo/model                        # a model directory, no registry
    charops serve charops-chat --port 9000 --api-key "$KEY"

    charops serve charops-chat --arena none             # playground without the arena

The playground is at URL/; its arena (production vs staging) is on when NAME has a staging
version other than the one served, or with --arena REF / --arena-model DIR.
``charops deploy NAME --local [...]`` is the same command (it hands its options to this one);
``charops deploy NAME`` deploys to the cluster. The server prints
``charops: serving 'NAME' at URL/openai/v1`` once the port is open (with --json, one JSON line
instead); Ctrl-C or SIGTERM stops it. Talk to it with ``charops chat --endpoint URL`` or any
OpenAI client. Limits and statuses: docs/serving.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charops.cli.arena import ArenaModelOpt, ArenaOpt
from charops.cli.common import JsonOpt, ServeQuietOpt
from charops.errors import CharopsError

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="Registry store: s3://BUCKET[/PREFIX], file:///PATH or a directory (default: "
    "$CHAROPS_STORE, the store config file, ./.charops/store).", show_default=False)]
VersionOpt = Annotated[str | None, typer.Option("--version", help="Registry version to serve (default: the production one).", show_default=False)]


def _is_directory(target: str) -> bool:
    """A model directory rather than a registered name: written as a path, or a folder here
    holding a model (a folder that happens to share a registered name does not count)."""
    return "/" in target or target.startswith(".") or (Path(target) / "config.json").is_file()


def serve(
    target: Annotated[str, typer.Argument(help="A registered model NAME (its production version, or --version) or a model DIRECTORY.", metavar="NAME|DIR")],
    version: VersionOpt = None,
    store: StoreOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Model id in URLs and the OpenAI 'model' field (default: the registered NAME; charops-chat for a DIRECTORY).", show_default=False)] = None,
    bind: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback exposes the model to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port (1-65535).")] = 8080,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="CHAROPS_API_KEY", help="Require 'Authorization: Bearer KEY' (default: $CHAROPS_API_KEY; none: open).", show_default=False)] = None,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Most replies decoded together (rows of the running batch).")] = 8,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Waiting requests beyond this are answered 429.")] = 64,
    max_batch_tokens: Annotated[int, typer.Option("--max-batch-tokens", help="KV-cache budget of the running batch: rows x the longest row's prompt + max_tokens; requests that do not fit wait in the queue.")] = 16384,
    prefix_cache_mb: Annotated[int, typer.Option("--prefix-cache-mb", help="Memory for cached prompt prefixes (character profiles, earlier turns), least recently used dropped first; 0: off.")] = 256,
    max_tokens_cap: Annotated[int, typer.Option("--max-tokens-cap", help="Largest max_tokens a request may ask for.")] = 1024,
    default_max_tokens: Annotated[int | None, typer.Option("--default-max-tokens", help="max_tokens when a request gives none (default: 256, or the cap if lower).", show_default=False)] = None,
    batch_wait_ms: Annotated[float, typer.Option("--batch-wait-ms", help="Longest a request waits for others to batch with while they keep arriving (0: never).")] = 50.0,
    batch_quiet_ms: Annotated[float, typer.Option("--batch-quiet-ms", help="Stop waiting once no request has arrived for this long.")] = 5.0,
    max_instances: Annotated[int, typer.Option("--max-instances", help="Most instances (v1 :predict) or texts (v2 infer) in one request; more is a 413.")] = 32,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Largest request body; more is a 413.")] = 1 << 20,
    read_timeout_s: Annotated[float, typer.Option("--read-timeout-s", help="Seconds a client has to send a request's headers, and again its body (then 408, connection closed).")] = 10.0,
    keep_alive_s: Annotated[int, typer.Option("--keep-alive-s", help="Seconds an idle kept-alive connection stays open.")] = 5,
    max_connections: Annotated[int, typer.Option("--max-connections", help="Open connections at most; one more is answered 503 and closed.")] = 128,
    character_prompt: Annotated[str, typer.Option("--character-prompt", help="When a request brings its own system message: merge (trained profile, then the client's text), client (the client's only) or profile (the profile only). A request's character_prompt field overrides it.")] = "merge",
    allow_untrained_characters: Annotated[bool, typer.Option("--allow-untrained-characters", help="Serve characters whose training data was all rejected (otherwise a request needs allow_untrained: true).")] = False,
    arena: ArenaOpt = None,
    arena_model: ArenaModelOpt = None,
    as_json: JsonOpt = False,
    quiet: ServeQuietOpt = False,
) -> None:
    """Serve a model on this machine with OpenAI-compatible chat routes, one model id per character.

    The playground is at / ; its arena is on with --arena/--arena-model, and by default for a
    registered NAME whose staging version is not the one served (--arena none: off).
    With --json the server's ready line is one JSON object (name, url, openai_base_url,
    characters, arena) on stdout.
    """
    from charops.cli.arena import arena_opponent
    from charops.serve.server import ServeConfig, serve

    if _is_directory(target):
        if version is not None:
            raise CharopsError(f"'{target}' is a model directory: --version is for registered names")
        if arena is not None and arena != "none":
            raise CharopsError(f"'{target}' is a model directory: --arena is for registered names; "
                               "use --arena-model DIR")
        model_dir, what, served = Path(target), target, name or "charops-chat"
        opponent = arena_opponent(store, served, None, arena_model, None)
    else:
        from charops.registry import check_name

        check_name(target)
        from charops.registry.download import local_model_dir

        model_dir, entry = local_model_dir(store, target, version)
        what = f"{target} v{entry['version']} ({'version ' + version if version else 'production'})"
        served = name or target
        opponent = arena_opponent(store, target, arena, arena_model, int(entry["version"]), default_staging=True)
    cfg = ServeConfig(model_dir=str(model_dir), name=served, host=bind, port=port, api_key=api_key,
                      max_batch_size=max_batch_size, max_queue=max_queue, max_batch_tokens=max_batch_tokens,
                      prefix_cache_mb=prefix_cache_mb, max_tokens_cap=max_tokens_cap,
                      default_max_tokens=default_max_tokens or min(256, max_tokens_cap),
                      batch_wait_ms=batch_wait_ms, batch_quiet_ms=batch_quiet_ms, max_instances=max_instances,
                      max_body_bytes=max_body_bytes, read_timeout_s=read_timeout_s, keep_alive_s=keep_alive_s,
                      max_connections=max_connections, character_prompt=character_prompt,
                      allow_untrained_characters=allow_untrained_characters, ready_json=as_json,
                      feedback_store=store, registry_version=None if _is_directory(target) else str(entry["version"]))
    cfg.validate()  # a bad port or address is one line before the model loads
    cfg.check_bind()
    if not quiet:
        typer.echo(f"loading {what}" + (f" and {opponent.model_dir} (arena)" if opponent else "") + " ...", err=True)
    serve(cfg, opponent)
