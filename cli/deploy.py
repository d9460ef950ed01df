"""``charops deploy``: serve a registered model (locally: a KServe model server on 127.0.0.1).

    charops deploy charops-chat --local                   # the registry's production version
    charops deploy charops-chat --local --version 3       # a given version
    charops deploy charops-chat --model runs/dpo/model    # a model directory, no registry
    charops deploy charops-chat --local --port 9000 --api-key "$KEY"

It prints the URL once the port is open; Ctrl-C or SIGTERM stops it. Talk to it with
``charops chat --endpoint http://127.0.0.1:8080 --character NAME`` or any OpenAI client
(``base_url=http://127.0.0.1:8080/openai/v1``). See docs/serving.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charops.errors import CharopsError

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="Registry store: s3://BUCKET[/PREFIX], file:///PATH or a directory (default: "
    "$CHAROPS_STORE, the store config file, ./.charops/store).", show_default=False)]


def registry_model_dir(store_url: str | None, name: str, version: str | None) -> tuple[Path, dict]:
    """A local copy of the registry entry's model (``version``, else production), checked
    against the entry's sha256."""
    from charops.io import sha256_tree
    from charops.model.load import default_cache_dir
    from charops.registry import get_entry, model_prefix
    from charops.storage import open_store

    store = open_store(store_url)
    if version is None:
        from charops.registry import production

        entry = production(store, name)
        if entry is None:
            raise CharopsError(f"model '{name}' has no production version in {store}; promote one "
                               "(charops promote NAME VERSION --to production) or pass --version V")
    else:
        entry = get_entry(store, name, version)
    dest = default_cache_dir().parent / "serve" / name / str(entry["version"])
    if not (dest.is_dir() and sha256_tree(dest) == entry["model_sha256"]):
        store.download_prefix(model_prefix(name, entry["version"]), dest, overwrite=True)
        if sha256_tree(dest) != entry["model_sha256"]:
            raise CharopsError(f"model '{name}' v{entry['version']}: the downloaded files do not match "
                               "the registry entry's sha256; the store copy is damaged, re-register it")
    return dest, entry


def deploy(
    name: Annotated[str, typer.Argument(help="Registered model name (also the served model id).")],
    local: Annotated[bool, typer.Option("--local", help="Serve on this machine (KServe model server).")] = False,
    version: Annotated[str | None, typer.Option("--version", help="Registry version to serve (default: the production one).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Serve this model directory instead of a registry entry (implies --local).", show_default=False)] = None,
    store: StoreOpt = None,
    bind: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback exposes the model to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8080,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="CHAROPS_API_KEY", help="Require 'Authorization: Bearer KEY' (default: $CHAROPS_API_KEY; none: open).", show_default=False)] = None,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Most concurrent requests in one generate call.")] = 8,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Waiting requests beyond this are answered 429.")] = 64,
    max_tokens_cap: Annotated[int, typer.Option("--max-tokens-cap", help="Largest max_tokens a request may ask for.")] = 1024,
    default_max_tokens: Annotated[int | None, typer.Option("--default-max-tokens", help="max_tokens when a request gives none (default: 256, or the cap if lower).", show_default=False)] = None,
    batch_wait_ms: Annotated[float, typer.Option("--batch-wait-ms", help="How long a lone request waits for others to batch with.")] = 2.0,
) -> None:
    """Serve a model with OpenAI-compatible chat routes, one model id per character."""
    from charops.registry import check_name
    from charops.serve.server import ServeConfig, serve

    check_name(name)
    if model is not None and version is not None:
        raise CharopsError("pass --model DIR or --version V, not both")
    if model is None and not local:
        raise CharopsError("cluster deployment is not part of this build; pass --local to serve on "
                           "this machine (or --model DIR)")
    if model is not None:
        model_dir, what = Path(model), f"{model}"
    else:
        model_dir, entry = registry_model_dir(store, name, version)
        what = f"{name} v{entry['version']} ({'version ' + version if version else 'production'})"
    typer.echo(f"loading {what} ...", err=True)
    serve(ServeConfig(model_dir=str(model_dir), name=name, host=bind, port=port, api_key=api_key,
                      max_batch_size=max_batch_size, max_queue=max_queue, max_tokens_cap=max_tokens_cap,
                      default_max_tokens=default_max_tokens or min(256, max_tokens_cap), batch_wait_ms=batch_wait_ms))
