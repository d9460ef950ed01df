"""The local model server: a ``kserve.Model`` in ``kserve.ModelServer`` on 127.0.0.1.

KServe gives the v1/v2 inference routes, ``/metrics`` and the health/readiness probes;
``charops.serve.openai_api`` adds ``/openai/v1/{models,chat/completions,completions}``. Two
things KServe does that a laptop server must not: it binds 0.0.0.0 (hard-coded in its REST
server) and starts gRPC on [::]; here the REST server binds ``host`` (127.0.0.1 unless the
caller says otherwise) and gRPC is off. KServe also parses ``sys.argv`` when it is imported,
so it is imported only inside :func:`serve`, after the argv is cleaned::

    python -m charops.serve.server --model runs/dpo/model --name charops-chat --port 8080
    charops deploy charops-chat --local               # the registry's production version

SIGTERM or Ctrl-C: stop taking requests, finish the running batch, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from charops.errors import CharopsError

log = logging.getLogger("charops.serve")


@dataclasses.dataclass
class ServeConfig:
    model_dir: str = dataclasses.field(metadata={"help": "Hugging Face model directory to serve."})
    name: str = dataclasses.field(default="charops-chat", metadata={"help": "Model name in URLs and the OpenAI 'model' field."})
    host: str = dataclasses.field(default="127.0.0.1", metadata={"help": "Address to bind (loopback unless said otherwise)."})
    port: int = dataclasses.field(default=8080, metadata={"help": "HTTP port."})
    api_key: str | None = dataclasses.field(default=None, metadata={"help": "Require 'Authorization: Bearer KEY'."})
    max_batch_size: int = dataclasses.field(default=8, metadata={"help": "Most replies decoded together (rows of the running batch)."})
    max_queue: int = dataclasses.field(default=64, metadata={"help": "Requests waiting beyond this get 429."})
    max_batch_tokens: int = dataclasses.field(default=16384, metadata={"help": "KV-cache budget of the running batch: rows x the longest row's prompt + max_tokens; requests that do not fit wait."})
    prefix_cache_mb: int = dataclasses.field(default=256, metadata={"help": "Memory for cached prompt prefixes (character profiles, earlier turns), LRU; 0: off."})
    prefill_chunk: int = dataclasses.field(default=512, metadata={"help": "Prompt tokens prefilled per step between decoding steps of the running rows."})
    batch_wait_ms: float = dataclasses.field(default=50.0, metadata={"help": "Longest a request waits for others to batch with."})
    batch_quiet_ms: float = dataclasses.field(default=5.0, metadata={"help": "Stop waiting once no request has arrived for this long."})
    max_tokens_cap: int = dataclasses.field(default=1024, metadata={"help": "Largest max_tokens a request may ask for."})
    default_max_tokens: int = dataclasses.field(default=256, metadata={"help": "max_tokens when a request gives none."})
    temperature: float = dataclasses.field(default=0.7, metadata={"help": "Default sampling temperature (0: greedy)."})
    top_p: float = dataclasses.field(default=0.9, metadata={"help": "Default nucleus sampling mass."})
    repetition_penalty: float = dataclasses.field(default=1.1, metadata={"help": "Default repetition penalty."})
    max_body_bytes: int = dataclasses.field(default=1 << 20, metadata={"help": "Largest request body accepted."})
    max_instances: int = dataclasses.field(default=32, metadata={"help": "Most instances (v1) or texts (v2) in one :predict/infer request."})
    read_timeout_s: float = dataclasses.field(default=10.0, metadata={"help": "Seconds a client has to send a request's headers, and again its body."})
    keep_alive_s: int = dataclasses.field(default=5, metadata={"help": "Seconds an idle kept-alive connection stays open."})
    max_connections: int = dataclasses.field(default=128, metadata={"help": "Open connections at most; one more is answered 503."})
    dtype: str = dataclasses.field(default="auto", metadata={"help": "torch dtype to load the weights in (auto, float32, bfloat16)."})
    character_prompt: str = dataclasses.field(default="merge", metadata={"help": "With a client system message: merge (profile, then the client's text), client or profile; a request's character_prompt overrides it."})
    allow_untrained_characters: bool = dataclasses.field(default=False, metadata={"help": "Serve characters whose training data was all rejected without the request's allow_untrained."})
    ready_json: bool = dataclasses.field(default=False, metadata={"help": "Say 'serving' as one JSON line (name, url, openai_base_url, characters)."})
    feedback_store: str | None = dataclasses.field(default=None, metadata={"help": "Store of the playground's feedback events (default: the configured store)."})
    registry_version: str | None = dataclasses.field(default=None, metadata={"help": "The registry version served, recorded in feedback events."})

    def validate(self) -> ServeConfig:
        if not (Path(self.model_dir) / "config.json").is_file():
            raise CharopsError(f"'{self.model_dir}' is not a model directory (no config.json)")
        for key in ("max_batch_size", "max_queue", "max_tokens_cap", "default_max_tokens", "max_body_bytes",
                    "max_batch_tokens", "prefix_cache_mb", "prefill_chunk", "max_instances", "read_timeout_s",
                    "keep_alive_s", "max_connections"):
            if getattr(self, key) < (0 if key in ("max_queue", "prefix_cache_mb") else 1):
                raise CharopsError(f"serve: {key} must be positive, not {getattr(self, key)}")
        if not 1 <= self.port <= 65535:
            raise CharopsError(f"serve: port {self.port} is not a TCP port (1 to 65535)")
        from charops.serve.prompting import POLICIES

        if self.character_prompt not in POLICIES:
            raise CharopsError(f"serve: character_prompt '{self.character_prompt}' is not one of {', '.join(POLICIES)}")
        if self.default_max_tokens > self.max_tokens_cap:
            raise CharopsError(f"serve: default_max_tokens {self.default_max_tokens} is over max_tokens_cap {self.max_tokens_cap}")
        return self

    def check_bind(self) -> None:
        """Refuse, in one line and before the model loads, an address this machine cannot listen
        on: a name that does not resolve, an address that is not its own, a port in use."""
        import errno
        import socket

        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as exc:
            raise CharopsError(f"serve: cannot resolve --host '{self.host}' ({exc}); give an address of "
                               "this machine, e.g. 127.0.0.1") from None
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                sock.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise CharopsError(f"serve: port {self.port} on {self.host} is in use (another server?); "
                                       "stop it or pick another --port") from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise CharopsError(f"serve: {self.host} is not an address of this machine; bind 127.0.0.1 "
                                       "(or 0.0.0.0 for every interface)") from None
                raise CharopsError(f"serve: cannot listen on {self.host}:{self.port}: {exc.strerror}") from None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def load_model(model_dir: str | Path, dtype: str = "auto"):
    """(model, tokenizer) for serving: eval mode, on the GPU if there is one, left padding, no
    remote code."""
    import torch
    from transformers import AutoModelForCausalLM

    from charops.model.load import load_tokenizer

    tok = load_tokenizer(model_dir)
    tok.padding_side = "left"
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype, trust_remote_code=False)
    if torch.cuda.is_available():  # the engine puts each batch on the model's device
        model.to("cuda")
    model.eval()
    return model, tok


def build_state(cfg: ServeConfig, on_batch=None):
    """Model, tokenizer, characters and the batching engine (not started)."""
    from charops.serve.characters import load_characters
    from charops.serve.engine import Engine
    from charops.serve.openai_api import Limits, ServingState

    model, tok = load_model(cfg.model_dir, cfg.dtype)
    engine = Engine(model, tok, max_batch_size=cfg.max_batch_size, max_queue=cfg.max_queue,
                    max_batch_tokens=cfg.max_batch_tokens, prefix_cache_bytes=cfg.prefix_cache_mb << 20,
                    prefill_chunk=cfg.prefill_chunk, batch_wait_ms=cfg.batch_wait_ms,
                    batch_quiet_ms=cfg.batch_quiet_ms, on_batch=on_batch)
    limits = Limits(max_tokens_cap=cfg.max_tokens_cap, default_max_tokens=cfg.default_max_tokens,
                    temperature=cfg.temperature, top_p=cfg.top_p,
                    repetition_penalty=cfg.repetition_penalty, max_body_bytes=cfg.max_body_bytes)
    max_context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    return ServingState(name=cfg.name, engine=engine, tokenizer=tok,
                        characters=load_characters(cfg.model_dir), max_context=max_context, limits=limits,
                        character_prompt=cfg.character_prompt, allow_untrained=cfg.allow_untrained_characters)


# -- the KServe routes: v1 :predict and v2 infer -------------------------------------------------

def _instance_body(state, instance: Any) -> dict:
    """The chat body of one v1 instance or v2 text (a string: one user message)."""
    from charops.serve.openai_api import APIError

    body = {"messages": [{"role": "user", "content": instance}]} if isinstance(instance, str) else instance
    if not isinstance(body, dict):
        raise APIError(400, "each instance is a string or an object with 'messages'", param="instances")
    return {"model": state.name, **body}


def _admit(state, count: int, max_instances: int) -> None:
    """Refuse a batch of instances before any work starts: more than a request may hold (413),
    or more than the queue has room for now (429)."""
    from charops.serve.openai_api import APIError

    if count > max_instances:
        raise APIError(413, f"{count} instances in one request; this server takes at most {max_instances} "
                       "(split the request)", param="instances", code="too_many_instances")
    room = state.engine.max_queue - state.engine.queued
    if count > room:
        raise APIError(429, f"the server is busy: {count} instances, room for {max(room, 0)} in the queue; "
                       "retry shortly", type="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": "1"})


async def reply_all(state, instances: list, max_instances: int) -> list[str]:
    """The replies to a list of instances, all or none: admitted first, prompts built and
    tokenized off the event loop, every request cancelled when one fails."""
    from charops.serve import openai_api as oa

    _admit(state, len(instances), max_instances)

    def build() -> list:
        reqs = []
        for instance in instances:
            body = _instance_body(state, instance)
            prompt = oa.chat_prompt(state, body)  # the same policy, persona and checks as the chat route
            req = oa.gen_request(state, body, prompt.ids)
            req.logits_processor = prompt.processor()
            reqs.append(req)
        return reqs

    reqs = await asyncio.to_thread(build)
    try:
        queues = [oa.submit(state, r) for r in reqs]
        return list(await asyncio.gather(*(oa.run_to_end(r, q) for r, q in zip(reqs, queues, strict=False))))
    finally:
        for r in reqs:
            r.cancelled = True  # a failed or abandoned request frees its rows


def chat_model_class(state, max_instances: int) -> type:
    """The ``kserve.Model`` of the v1/v2 routes, ready while the engine is healthy."""
    import kserve
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from charops.serve.openai_api import APIError

    class CharacterChatModel(kserve.Model):
        """v1: ``{"instances": ["text", {"messages": [...], "character": NAME, ...}]}`` ->
        ``{"predictions": [reply, ...]}``; v2: a BYTES input of user messages (parameters may
        name a ``character``) -> a BYTES output ``reply``."""

        def __init__(self):
            super().__init__(state.name)
            self.started = False

        def load(self) -> bool:
            # KServe calls load() again for a model that is not healthy: start the engine once.
            if not self.started:
                state.engine.start()
                self.started = True
            self.ready = True
            return self.ready

        async def healthy(self) -> bool:
            """Readiness of /v1/models/NAME and /v2/models/NAME/ready: false once the engine
            cannot serve (its worker died, the model fails, or it is draining)."""
            return self.ready and state.engine.healthy()

        def worker_alive(self) -> bool:
            """Liveness: the engine's worker thread runs (or has not been started yet)."""
            return not self.started or state.engine.alive

        def stop(self) -> None:
            # Called from KServe's SIGTERM handler on the event loop: drain (start nothing
            # new, queued requests get 503) without blocking the loop, so running replies keep
            # streaming through the grace period; serve() stops the engine once the server exits.
            self.ready = False
            state.engine.drain()

        async def predict(self, payload, headers=None, response_headers=None):
            if isinstance(payload, InferRequest):
                if len(payload.inputs) != 1 or payload.inputs[0].datatype != "BYTES":
                    raise APIError(400, "send one BYTES input of user messages", param="inputs")
                params = dict(payload.parameters or {})
                texts = [t.decode() if isinstance(t, bytes) else str(t) for t in payload.inputs[0].data]
                replies = await reply_all(state, [{**params, "messages": [{"role": "user", "content": t}]}
                                                  for t in texts], max_instances)
                out = InferOutput(name="reply", shape=[len(replies)], datatype="BYTES", data=replies)
                return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])
            instances = payload.get("instances") if isinstance(payload, dict) else None
            if not isinstance(instances, list) or not instances:
                raise APIError(400, "expected {'instances': [...]} with at least one instance", param="instances")
            return {"predictions": await reply_all(state, instances, max_instances)}

    return CharacterChatModel


# -- the server ---------------------------------------------------------------------------------

GRACE_S = 10  # after SIGTERM: running replies get this long, then end with an error


def _dataplane_class() -> type:
    """KServe's DataPlane whose server readiness is every model's (KServe's says True always)."""
    from kserve.errors import ServerNotLive
    from kserve.protocol.dataplane import DataPlane

    class HealthyDataPlane(DataPlane):
        async def ready(self) -> bool:
            models = list(self.model_registry.get_models().values())
            return bool(models) and all([await m.healthy() for m in models])

        async def live(self) -> dict[str, str]:
            """Liveness (``/``, ``/v2/health/live``): 503 once a model's generate worker is gone,
            which no request can bring back, so Kubernetes restarts the pod."""
            if not all(getattr(m, "worker_alive", lambda: True)() for m in self.model_registry.get_models().values()):
                raise ServerNotLive()
            return {"status": "alive"}

    return HealthyDataPlane


async def until_started(server) -> bool:
    """Wait until a uvicorn server listens: True, or False when it was told to exit first."""
    while not server.started:
        if server.should_exit:
            return False
        await asyncio.sleep(0.05)
    return True


def loopback_server_class(state, limits, ready_json: bool = False, arena: list[str] | None = None) -> type:
    """``kserve.ModelServer`` whose REST server binds ``host``, with gRPC off, one worker, the
    connection limits of :mod:`charops.serve.guard`, and the engine drained on SIGTERM."""
    import kserve
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    from charops.serve.guard import guarded_protocol

    class LoopbackModelServer(kserve.ModelServer):
        def __init__(self, host: str, url: str, **kwargs: Any):
            super().__init__(enable_grpc=False, workers=1, grace_period=GRACE_S, **kwargs)
            self.host, self.url = host, url
            self.dataplane = _dataplane_class()(model_registry=self.registered_models)

        async def _announce(self) -> None:
            if not await until_started(self._rest_server._server):
                return
            # The line people (and the tests) wait for: the port is open and the model loaded.
            if ready_json:
                print(json.dumps({"name": state.name, "url": self.url, "openai_base_url": f"{self.url}/openai/v1",
                                  "characters": list(state.characters), "arena": arena}, ensure_ascii=False), flush=True)
            else:
                arena_line = f"; playground arena: {arena[0]} vs {arena[1]}" if arena else ""
                print(f"charops: serving '{state.name}' at {self.url}/openai/v1 "
                      f"(characters: {', '.join(state.characters) or 'none'}){arena_line}", flush=True)

        async def _drain_on_exit(self) -> None:
            """On SIGTERM (uvicorn's should_exit): start nothing new, fail the queued requests
            (503), give the running ones until shortly before uvicorn's grace period ends, then
            end them with an error, so every stream closes with an error frame and [DONE]."""
            server = self._rest_server._server
            while not server.should_exit:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(state.engine.stop, max(GRACE_S - 3, 1))

        async def _start_rest(self) -> None:
            """RESTServer.start, plus 503s for a probe that says "not ready" without the
            traceback KServe's own handlers log for each (a probe asks every few seconds)."""
            from fastapi.responses import JSONResponse
            from kserve.errors import ModelNotReady, ServerNotLive, ServerNotReady
            from kserve.model_server import app

            async def unavailable(request, exc: Exception) -> JSONResponse:
                return JSONResponse({"error": str(exc)}, status_code=503)

            self._rest_server.create_application()
            for exc in (ServerNotReady, ModelNotReady, ServerNotLive):
                app.add_exception_handler(exc, unavailable)
            await self._rest_server._server.serve()

        async def _serve(self):
            await asyncio.gather(*self.servers, self._announce(), self._drain_on_exit())

        def start(self, models: list) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = RESTServer(
                FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                self.http_port, access_log_format=self.access_log_format, workers=1,
                grace_period=self.grace_period, event_loop=self.event_loop,
                timeout_keep_alive=limits.keep_alive_s)
            config = self._rest_server.config
            config.host = self.host  # kserve hard-codes 0.0.0.0
            config.http = guarded_protocol(limits)
            config.h11_max_incomplete_event_size = limits.max_header_bytes
            self.servers.append(self._start_rest())
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    return LoopbackModelServer


def _import_kserve_app():
    """KServe's FastAPI app. kserve parses sys.argv at import (parse_known_args, with prefix
    matching): it must not see our own flags, e.g. `--model` would be taken as `--model_name`."""
    saved_argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve  # noqa: F401
        from kserve.model_server import app
    finally:
        sys.argv = saved_argv
    return app


def add_routes(app, state, cfg: ServeConfig) -> None:
    """The OpenAI routes, the guard (key, body size and time) and OpenAI-shaped refusals from
    the KServe routes too."""
    from fastapi.responses import JSONResponse

    from charops.serve.guard import Guard
    from charops.serve.openai_api import APIError, openai_router

    app.include_router(openai_router(state))

    async def api_error(request, exc: APIError) -> JSONResponse:
        return exc.response()

    app.add_exception_handler(APIError, api_error)
    open_paths = {"/", "/v2/health/live", "/v2/health/ready", f"/v1/models/{cfg.name}",
                  f"/v2/models/{cfg.name}/ready"}
    app.add_middleware(Guard, api_key=cfg.api_key, max_body_bytes=cfg.max_body_bytes, open_paths=open_paths,
                       read_timeout_s=cfg.read_timeout_s)


@dataclasses.dataclass
class Opponent:
    """The arena's second model: a directory, or a registry version of the same name."""

    model_dir: str
    version: int | None = None


def arena_backend(cfg: ServeConfig, store: Any, opponent: Opponent) -> Any:
    """The arena's second model: its own serving state and batching engine (not started), with
    the registry info of its version or its directory's label. Used by ``charops playground``
    and by the local API server (charops serve / deploy --local)."""
    from charops.serve.playground import Backend, model_info, registry_info

    state = build_state(dataclasses.replace(cfg, model_dir=opponent.model_dir))
    info = (registry_info(store, cfg.name, opponent.version)[0] if opponent.version is not None
            else model_info(cfg.name, model_dir=opponent.model_dir))
    return Backend("arena", info, state)


def arena_labels(pg: Any) -> list[str] | None:
    """The arena's two models as the ready line names them (None: no arena)."""
    return [b.label for b in pg.backends] if pg.arena is not None else None


def serve(cfg: ServeConfig, opponent: Any = None) -> None:
    """Load the model and serve it until SIGTERM/SIGINT (blocks). ``opponent``
    (Opponent) puts a second model in the playground's arena."""
    from charops.serve.guard import HttpLimits

    cfg.validate()
    cfg.check_bind()
    app = _import_kserve_app()
    from prometheus_client import Histogram  # kserve's dependency; its /metrics shows it

    batch_sizes = Histogram("charops_serve_batch_size", "Rows per decoding step",
                            buckets=(1, 2, 4, 8, 16, 32, 64))
    state = build_state(cfg, on_batch=batch_sizes.observe)
    model = chat_model_class(state, cfg.max_instances)()
    model.load()
    add_routes(app, state, cfg)
    from charops.serve.playground import mount  # the playground at / (docs/playground.md)
    from charops.storage import open_store

    store = open_store(cfg.feedback_store)
    arena = arena_backend(cfg, store, opponent) if opponent is not None else None
    pg = mount(app, state, name=cfg.name, store=store, model_dir=cfg.model_dir, arena=arena,
               version=int(cfg.registry_version) if cfg.registry_version else None)
    limits = HttpLimits(read_timeout_s=cfg.read_timeout_s, keep_alive_s=cfg.keep_alive_s,
                        max_connections=cfg.max_connections, max_body_bytes=cfg.max_body_bytes)
    server = loopback_server_class(state, limits, cfg.ready_json, arena_labels(pg))(cfg.host, cfg.url, http_port=cfg.port)
    if arena is not None:
        arena.state.engine.start()  # the served model's engine starts in model.load()
    try:
        server.start([model])
    finally:
        state.engine.stop()
        if arena is not None:
            arena.state.engine.stop()


def _parse(argv: list[str] | None) -> ServeConfig:
    p = argparse.ArgumentParser(prog="python -m charops.serve.server", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(ServeConfig):
        flag = "--" + ("model" if f.name == "model_dir" else f.name.replace("_", "-"))
        kind = {"int": int, "float": float}.get(str(f.type), str)
        if str(f.type) == "bool":
            p.add_argument(flag, dest=f.name, action="store_true", help=f.metadata["help"])
        elif f.default is dataclasses.MISSING:
            p.add_argument(flag, dest=f.name, type=kind, required=True, help=f.metadata["help"])
        else:
            p.add_argument(flag, dest=f.name, type=kind, default=f.default, help=f.metadata["help"])
    return ServeConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        serve(_parse(argv))
    except CharopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":
    main()
