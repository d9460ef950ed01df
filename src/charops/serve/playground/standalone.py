"""``charops playground``: the playground on its own server, with an optional arena opponent.

One process holds the chat model (and the arena's second model, each with its own batching
engine) and serves the page, its API and the chat model's OpenAI routes, on 127.0.0.1 unless
told otherwise::

    charops playground charops-chat --arena staging
    python -c "from charops.serve.playground.standalone import serve_playground; ..."

SIGTERM or Ctrl-C stops it (uvicorn finishes the open requests), then the engines stop.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any

from charops.serve.playground import mount
from charops.serve.server import (
    Opponent,
    ServeConfig,
    arena_backend,
    arena_labels,
    build_state,
    until_started,
)


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but SIGTERM/SIGINT end it with exit status 0: uvicorn re-raises the
        signal after its graceful shutdown, which would kill the process with it."""

        @contextlib.contextmanager
        def capture_signals(self):
            old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in old.items():
                    signal.signal(s, handler)

    return Server


def serve_playground(cfg: ServeConfig, *, store: Any, version: int | None = None,
                     opponent: Opponent | None = None, ready: Any = None, ready_json: bool = False) -> None:
    """Load the model(s) and serve until SIGTERM/SIGINT (blocks)."""
    import asyncio

    import uvicorn
    from fastapi import FastAPI

    from charops.serve.server import add_routes

    _Server = _server_class()
    cfg.validate()
    state = build_state(cfg)
    states = [state]
    arena = arena_backend(cfg, store, opponent) if opponent is not None else None
    if arena is not None:
        states.append(arena.state)
    app = FastAPI(title="charops playground", docs_url=None, redoc_url=None)
    pg = mount(app, state, name=cfg.name, store=store, version=version, model_dir=cfg.model_dir,
               arena=arena)
    add_routes(app, state, cfg)  # the OpenAI routes and the guard, as charops deploy --local has them
    for s in states:
        s.engine.start()
    server = _Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                    timeout_graceful_shutdown=10))

    async def announce() -> None:
        if not await until_started(server):
            return
        if ready_json:
            import json

            print(json.dumps({"name": cfg.name, "url": f"{cfg.url}/", "openai_base_url": f"{cfg.url}/openai/v1",
                              "arena": arena_labels(pg)},
                             ensure_ascii=False), flush=True)
        else:
            arena_line = (f"; arena: {pg.backends[0].label} vs {pg.backends[1].label}" if arena else "")
            print(f"charops: serving '{cfg.name}' playground at {cfg.url}/ and the API at "
                  f"{cfg.url}/openai/v1{arena_line}", flush=True)
        if ready is not None:
            ready(pg)

    async def main() -> None:
        await asyncio.gather(server.serve(), announce())

    try:
        asyncio.run(main())
    finally:
        for s in states:
            s.engine.stop()
        sys.stdout.flush()
