"""The playground arena's options, shared by ``charops playground`` and ``charops serve`` /
``charops deploy --local``: --arena REF (staging, production, a version, or none) and
--arena-model DIR, turned into the second model to serve (charops.serve.server.Opponent)."""

from __future__ import annotations

from typing import Annotated

import typer

from charops.errors import CharopsError


def registry_ref(store, name: str, ref: str) -> int:
    """The version number REF names: production, staging or a number."""
    from charops.registry import check_version
    from charops.registry.stages import version_in

    if ref in ("production", "staging"):
        v = version_in(store, name, ref)
        if v is None:
            raise CharopsError(f"'{name}' has no {ref} version; promote one or name a version number")
        return v
    return check_version(ref)


ArenaOpt = Annotated[str | None, typer.Option("--arena", help="Arena opponent from the registry: staging, production or a version number.", show_default=False)]
ArenaModelOpt = Annotated[str | None, typer.Option("--arena-model", help="Arena opponent: a model directory.", show_default=False)]


def arena_opponent(store_url: str | None, name: str, arena: str | None, arena_model: str | None,
                   chat_version: int | None, *, default_staging: bool = False):
    """The arena's Opponent from --arena/--arena-model (None: no arena). With
    ``default_staging`` and neither option, the staging version when it is not the one served;
    ``--arena none`` turns the arena off."""
    from charops.registry.download import local_model_dir
    from charops.serve.server import Opponent
    from charops.storage import open_store

    if arena is not None and arena_model is not None:
        raise CharopsError("pass --arena REF or --arena-model DIR, not both")
    if arena_model is not None:
        return Opponent(arena_model)
    if arena == "none":
        return None
    st = open_store(store_url)
    if arena is None:
        if not default_staging:
            return None
        from charops.registry.stages import version_in

        v = version_in(st, name, "staging")
        if v is None or v == chat_version:
            return None
    else:
        v = registry_ref(st, name, arena)
        if v == chat_version:
            raise CharopsError(f"--arena {arena} is v{v}, the version being served; pick another")
    return Opponent(str(local_model_dir(store_url, name, str(v))[0]), v)
