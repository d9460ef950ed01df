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
    dtype: str = dataclasses.field(default="auto", metadata={"help": "torch dtype to load the weights in (auto, float32, bfloat16)."})
    character_prompt: str = dataclasses.field(default="merge", metadata={"help": "With a client system message: merge (profile, then the client's text), client or profile; a request's character_prompt overrides it."})
    allow_untrained_characters: bool = dataclasses.field(default=False, metadata={"help": "Serve characters whose training data was all rejected without the request's allow_untrained."})

    def validate(self) -> ServeConfig:
        if not (Path(self.model_dir) / "config.json").is_file():
            raise CharopsError(f"'{self.model_dir}' is not a model directory (no config.json)")
        for key in ("port", "max_batch_size", "max_queue", "max_tokens_cap", "default_max_tokens", "max_body_bytes",
                    "max_batch_tokens", "prefix_cache_mb", "prefill_chunk"):
            if getattr(self, key) < (0 if key in ("max_queue", "prefix_cache_mb") else 1):
                raise CharopsError(f"serve: {key} must be positive, not {getattr(self, key)}")
        from charops.serve.prompting import POLICIES

        if self.character_prompt not in POLICIES:
            raise CharopsError(f"serve: character_prompt '{self.character_prompt}' is not one of {', '.join(POLICIES)}")
        if self.default_max_tokens > self.max_tokens_cap:
            raise CharopsError(f"serve: default_max_tokens {self.default_max_tokens} is over max_tokens_cap {self.max_tokens_cap}")
        return self

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


def _kserve_classes(state):
    """The kserve.Model subclass and the loopback ModelServer (kserve imported here only)."""
    import kserve
    from kserve.errors import InvalidInput
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.protocol.rest.server import RESTServer

    from charops.serve import openai_api as oa

    class CharacterChatModel(kserve.Model):
        """v1: ``{"instances": ["text", {"messages": [...], "character": NAME, ...}]}`` ->
        ``{"predictions": [reply, ...]}``; v2: a BYTES input of user messages (parameters may
        name a ``character``) -> a BYTES output ``reply``."""

        def __init__(self):
            super().__init__(state.name)

        def load(self) -> bool:
            state.engine.start()
            self.ready = True
            return self.ready

        def stop(self) -> None:
            self.ready = False
            state.engine.stop()

        async def _reply(self, instance: Any) -> str:
            body = {"messages": [{"role": "user", "content": instance}]} if isinstance(instance, str) else instance
            if not isinstance(body, dict):
                raise InvalidInput("each instance is a string or an object with 'messages'")
            body = {"model": state.name, **body}
            try:
                prompt = oa.chat_prompt(state, body)  # the same policy, persona and checks as the chat route
                req = oa.gen_request(state, body, prompt.ids)
                req.logits_processor = prompt.processor()
                return await oa.run_to_end(req, oa.submit(state, req))
            except oa.APIError as exc:
                raise InvalidInput(exc.message) from None

        async def predict(self, payload, headers=None, response_headers=None):
            if isinstance(payload, InferRequest):
                if len(payload.inputs) != 1 or payload.inputs[0].datatype != "BYTES":
                    raise InvalidInput("send one BYTES input of user messages")
                params = dict(payload.parameters or {})
                texts = [t.decode() if isinstance(t, bytes) else str(t) for t in payload.inputs[0].data]
                replies = await asyncio.gather(*(self._reply({**params, "messages": [
                    {"role": "user", "content": t}]}) for t in texts))
                out = InferOutput(name="reply", shape=[len(replies)], datatype="BYTES", data=list(replies))
                return InferResponse(response_id=payload.id or "", model_name=self.name,
                                     infer_outputs=[out])
            instances = payload.get("instances") if isinstance(payload, dict) else None
            if not isinstance(instances, list) or not instances:
                raise InvalidInput("expected {'instances': [...]} with at least one instance")
            return {"predictions": list(await asyncio.gather(*(self._reply(i) for i in instances)))}

    class LoopbackModelServer(kserve.ModelServer):
        """kserve.ModelServer whose REST server binds ``host``, with gRPC off and one worker."""

        def __init__(self, host: str, url: str, **kwargs: Any):
            super().__init__(enable_grpc=False, workers=1, **kwargs)
            self.host, self.url = host, url

        async def _announce(self) -> None:
            server = self._rest_server._server
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.05)
            # The line people (and the tests) wait for: the port is open and the model loaded.
            print(f"charops: serving '{state.name}' at {self.url}/openai/v1 "
                  f"(characters: {', '.join(state.characters) or 'none'})", flush=True)

        async def _serve(self):
            await asyncio.gather(*self.servers, self._announce())

        def start(self, models: list) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = RESTServer(
                FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                self.http_port, access_log_format=self.access_log_format, workers=1,
                grace_period=self.grace_period, event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive)
            self._rest_server.config.host = self.host  # kserve hard-codes 0.0.0.0
            self.servers.append(self._rest_server.start())
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    return CharacterChatModel, LoopbackModelServer


def serve(cfg: ServeConfig) -> None:
    """Load the model and serve it until SIGTERM/SIGINT (blocks)."""
    cfg.validate()
    # kserve parses sys.argv at import (parse_known_args, with prefix matching): it must not
    # see our own flags, e.g. `--model` would be taken as its `--model_name`.
    saved_argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve  # noqa: F401
        from kserve.model_server import app
    finally:
        sys.argv = saved_argv
    from prometheus_client import Histogram  # kserve's dependency; its /metrics shows it

    from charops.serve.openai_api import Guard, openai_router

    batch_sizes = Histogram("charops_serve_batch_size", "Rows per decoding step",
                            buckets=(1, 2, 4, 8, 16, 32, 64))
    state = build_state(cfg, on_batch=batch_sizes.observe)
    model_cls, server_cls = _kserve_classes(state)
    model = model_cls()
    model.load()
    app.include_router(openai_router(state))
    open_paths = {"/", "/v2/health/live", "/v2/health/ready", f"/v1/models/{cfg.name}",
                  f"/v2/models/{cfg.name}/ready"}
    app.add_middleware(Guard, api_key=cfg.api_key, max_body_bytes=cfg.max_body_bytes, open_paths=open_paths)
    server = server_cls(cfg.host, cfg.url, http_port=cfg.port, grace_period=10)
    try:
        server.start([model])
    finally:
        state.engine.stop()


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
