"""The playground: chat with a character, compare two versions blind, see the leaderboard.

Plain HTML, vanilla JS and server-sent events, served by the same process as the model (no
Node build step). Every action on the page is a feedback event (charops.feedback) stored in
the artifact store; ``charops feedback export`` turns them into DPO/KTO data::

    charops playground charops-chat                       # production, on 127.0.0.1:8080
    charops playground charops-chat --arena staging       # + arena: production vs staging
    charops playground --model runs/dpo/model --arena-model runs/sft/model
    charops deploy charops-chat --local                   # the API server mounts it at / too

See docs/playground.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charops.serve.playground.routes import Backend, Playground, playground_router

__all__ = ["Backend", "Playground", "model_info", "mount", "playground_router"]


def model_info(name: str, version: int | None = None, sha256: str | None = None,
               model_dir: str | Path | None = None) -> dict:
    """The ``model`` object of events: registry name/version/sha256, or a directory's label."""
    info: dict[str, Any] = {"name": name, "version": version, "sha256": sha256}
    if version is None and model_dir is not None:
        info["label"] = Path(model_dir).resolve().name
        if info["label"] in ("model", ""):  # runs/dpo/model -> dpo/model
            info["label"] = "/".join(Path(model_dir).resolve().parts[-2:])
    return info


def registry_info(store: Any, name: str, version: int | None) -> tuple[dict, str | None]:
    """(model info of ``name`` v``version``, leaderboard label of the production version)."""
    from charops.registry import get_entry
    from charops.registry.stages import version_in

    v = version_in(store, name, "production")
    prod = f"{name} v{v}" if v is not None else None
    if version is None:
        return model_info(name), prod
    entry = get_entry(store, name, version)
    return model_info(name, int(entry["version"]), entry["model_sha256"]), prod


def mount(app: Any, state: Any, *, name: str, store: Any = None, version: int | None = None,
          model_dir: str | Path | None = None, arena: Backend | None = None) -> Playground:
    """Add the playground (page at ``/``, API under ``/playground/api``) to a FastAPI app whose
    OpenAI routes serve ``state``. Events go to ``store`` (default: the configured store)."""
    from charops.storage import open_store

    store = store if store is not None and not isinstance(store, str) else open_store(store)
    if version is not None:
        info, production = registry_info(store, name, version)
    else:
        info, production = model_info(name, model_dir=model_dir), None
    backends = [Backend("main", info, state)]
    if arena is not None:
        backends.append(arena)
    pg = Playground(name=name, backends=backends, store=store,
                    arena=("main", arena.key) if arena is not None else None, production=production)
    app.include_router(playground_router(pg))
    return pg
