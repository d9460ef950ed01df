"""`charops store`: look into and move files in the artifact store (local directory or S3).

    charops store ls [PREFIX]                    # keys under PREFIX (CHAROPS_STORE, config, default)
    charops store put out/sft models/sft/run1    # a directory is published atomically (_SUCCESS)
    charops store get models/sft/run1 /tmp/sft   # a published prefix or a single object
    charops --debug store ls --store s3://mlpipeline/charops
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charops.cli.common import JsonOpt, QuietOpt, echo_json, new_app, printable

app = new_app("List, upload and download artifacts in the store (local directory or S3/MinIO).")

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="Store URL: s3://BUCKET[/PREFIX], file:///PATH or a directory (default: "
    "$CHAROPS_STORE, the store config file, the cluster's KFP store, ./.charops/store).",
    show_default=False)]


@app.command()
def ls(prefix: Annotated[str, typer.Argument(help="Key prefix (a folder).")] = "",
       store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List the keys under PREFIX."""
    from charops.storage import open_store

    keys = open_store(store).list(prefix)
    if as_json:
        echo_json(keys)
    else:
        for key in keys:  # keys are whatever was uploaded: never raw to the terminal
            typer.echo(printable(key))


@app.command()
def put(local: Annotated[Path, typer.Argument(help="A file or a directory.")],
        key: Annotated[str, typer.Argument(help="Destination key (a prefix for a directory).")],
        force: Annotated[bool, typer.Option("--force", help="Allow replacing published content, a non-empty prefix, or keys under .meta/ and .staging/.")] = False,
        store: StoreOpt = None, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Upload a file, or publish a directory (visible only once complete).

    Nothing published is replaced without --force.
    """
    from charops.storage import StorageError, open_store
    from charops.storage.store import check_put

    st = open_store(store)
    if local.exists():
        key = check_put(st, key, directory=local.is_dir(), force=force)
    if local.is_dir():
        manifest = st.put_dir(local, key)
        summary = {"url": st.url_for(key), "files": len(manifest["files"]),
                   "bytes": sum(f["size"] for f in manifest["files"].values())}
    elif local.is_file():
        info = st.put_file(local, key)
        summary = {"url": st.url_for(key), "files": 1, "bytes": info.size, "sha256": info.sha256}
    else:
        raise StorageError(f"{local}: no such file or directory")
    if as_json:
        echo_json(summary)
    elif not quiet:
        typer.echo(printable(f"uploaded {summary['files']} file(s), {summary['bytes']} bytes -> {summary['url']}"))


@app.command()
def get(key: Annotated[str, typer.Argument(help="A published prefix or one object's key.")],
        dest: Annotated[Path, typer.Argument(help="Local directory (prefix) or file (object).")],
        force: Annotated[bool, typer.Option("--force", help="Replace an existing file or non-empty directory.")] = False,
        store: StoreOpt = None, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Download a published prefix (verified, atomic) or a single object (resumable).

    An object downloaded into an existing directory keeps its name; nothing local is
    replaced without --force.
    """
    from charops.storage import MARKER, open_store
    from charops.storage.store import get_destination

    st = open_store(store)
    root = getattr(st, "root", None)  # a local store's directory: never a destination
    if st.exists(f"{key.rstrip('/')}/{MARKER}"):
        out = st.download_prefix(key, get_destination(key, dest, prefix=True, force=force,
                                                      store_root=root), overwrite=force)
        summary = {"url": st.url_for(key), "path": str(out)}
    else:
        st.url_for(key)  # a bad key is reported as such, before the destination
        transfer = st.get_file(key, get_destination(key, dest, prefix=False, force=force,
                                                    store_root=root))
        summary = {"url": st.url_for(key), "path": str(transfer.path), "bytes": transfer.size,
                   "resumed_from": transfer.resumed_from}
    if as_json:
        echo_json(summary)
    elif not quiet:
        typer.echo(printable(f"{summary['url']} -> {summary['path']}"))
