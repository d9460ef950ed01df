"""A registry version's model as a local directory: downloaded once into the serving cache
and checked against the entry's sha256 (``charops serve``, ``charops playground``, the arena)."""

from __future__ import annotations

from pathlib import Path

from charops.errors import CharopsError


def local_model_dir(store_url: str | None, name: str, version: str | None) -> tuple[Path, dict]:
    """A local copy of the registry entry's model (``version``, else production), checked
    against the entry's sha256."""
    from charops.io import sha256_tree
    from charops.model.cache import default_cache_dir
    from charops.registry import get_entry, model_prefix
    from charops.storage import open_store

    store = open_store(store_url)
    if version is None:
        from charops.registry.stages import production

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
