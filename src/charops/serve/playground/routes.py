"""The playground's HTTP side: the page at ``/`` and its JSON/SSE API under ``/playground/api``.

Routes (all answers JSON unless said otherwise; a refusal is ``{"error": {"message", "field"}}``
with a 4xx status):

- ``GET /``: the page (plain HTML + vanilla JS + CSS from ``static/``, no build step), with a
  Content-Security-Policy that allows no inline script;
- ``GET /playground/api/info``: characters (name, category, greeting), whether the arena is on
  (and ``arena_models``: the labels of its two models);
- ``POST /playground/api/chat``: ``{character, messages, n, temperature, top_p, max_tokens}``
  (and the OpenAI chat route's ``character_prompt``, ``persona``, ``lorebook``,
  ``allow_untrained``: the prompt is built by ``openai_api.chat_prompt``, so a client system
  message is merged after the trained profile by default) -> an event stream
  (``text/event-stream``): ``start`` (the exact rendered messages, the applied
  ``character_prompt`` policy, the model, every candidate's sampling settings), ``delta``
  (candidate, text), ``done`` (candidate, finish reason), ``end``. ``n`` candidates are sampled
  in one batch (regenerate/swipe);
- ``POST /playground/api/arena``: ``{character, messages, conversation, turn, topic}`` -> two
  anonymous replies ``A``/``B`` and a match id; the left/right order is drawn at random;
- ``POST /playground/api/arena/vote``: ``{match, id, at, winner}`` -> stores the vote event,
  reveals the two models, says whether it counted (a reply that names its model voids it);
- ``POST /playground/api/feedback``: a feedback event (charops.feedback.events) -> 201 created,
  200 duplicate (same id resent), 400/409/413 with the field at fault;
- ``GET /playground/api/leaderboard``: Bradley-Terry overall/per category/per topic and
  win/tie/lose against production (charops.serve.playground.arena.leaderboard).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from charops.feedback.events import MAX_EVENT_BYTES, EventError, check_event, now_iso
from charops.feedback.store import append_event, read_events
from charops.serve import openai_api as oa
from charops.serve.playground.arena import (
    Matches,
    draw_order,
    leaderboard,
    model_label,
    names_model,
)

MAX_CANDIDATES = 4
STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
# No inline script or style, no plugins, nothing from elsewhere: even text that slipped into
# the DOM as markup could not run. The page itself only ever sets textContent.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@dataclasses.dataclass
class Backend:
    """One model the playground can talk to."""

    key: str
    model: dict  # {"name", "version", "sha256", "label"?}
    state: oa.ServingState
    stage: str | None = None

    @property
    def label(self) -> str:
        return model_label(self.model)


@dataclasses.dataclass
class Playground:
    """What the routes need: the models, where events go, the pending arena matches."""

    name: str  # the registry name the feedback is filed under
    backends: list[Backend]
    store: Any
    arena: tuple[str, str] | None = None  # keys of the two arena models
    production: str | None = None  # leaderboard label of the production model
    matches: Matches = dataclasses.field(default_factory=Matches)

    @property
    def chat_backend(self) -> Backend:
        return self.backends[0]

    def backend(self, key: str | None) -> Backend:
        if key is None:
            return self.chat_backend
        for b in self.backends:
            if b.key == key:
                return b
        raise oa.APIError(404, f"no model '{key}' in this playground", param="backend")


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "field": field}}, status_code=status)


def _static(name: str) -> bytes:
    return resources.files("charops.serve.playground").joinpath("static", name).read_bytes()


def _sampling(req: Any) -> dict:
    return {"temperature": req.temperature, "top_p": req.top_p, "max_tokens": req.max_new_tokens,
            "repetition_penalty": req.repetition_penalty, "seed": req.seed}


# What a playground turn passes on to the OpenAI chat route's prompt building: the character,
# the profile policy, persona, lorebook and untrained-character opt-in, and the sampling
# settings. Continue/prefill is left out: every turn answers a user turn (a feedback event's
# messages end with the user turn its candidates answer).
PROMPT_FIELDS = ("character", "character_prompt", "persona", "lorebook", "allow_untrained")
SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens", "seed")


def _prepare(backend: Backend, body: dict) -> tuple[dict, oa.Prompt]:
    """(request body, prompt) of a playground turn, built by the OpenAI chat route's
    :func:`charops.serve.openai_api.chat_prompt`: the trained profile is merged with a client
    system message by default, exactly as on ``/openai/v1/chat/completions``."""
    req_body = {"model": backend.state.name, "messages": body.get("messages")}
    for key in PROMPT_FIELDS + SAMPLING_FIELDS:
        if body.get(key) is not None:
            req_body[key] = body[key]
    prompt = oa.chat_prompt(backend.state, req_body)
    if prompt.messages[-1]["role"] != "user":
        raise oa.APIError(400, "the last message must be the user's turn", param="messages")
    return req_body, prompt


def playground_router(pg: Playground) -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page() -> Response:
        return HTMLResponse(_static("index.html"), headers={"Content-Security-Policy": CSP,
                                                           "X-Content-Type-Options": "nosniff"})

    @router.get("/playground/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:
            return _error(404, f"no static file '{name}'")
        return Response(_static(name), media_type=STATIC[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @router.get("/playground/api/info")
    async def info() -> JSONResponse:
        state = pg.chat_backend.state
        chars = [{"name": c.name, "category": c.profile.category, "greeting": c.profile.greeting,
                  "language": c.profile.language} for c in state.characters.values()]
        return JSONResponse({"name": pg.name, "model": pg.chat_backend.model, "characters": chars,
                             "arena": pg.arena is not None,
                             "arena_models": [pg.backend(k).label for k in pg.arena] if pg.arena else None,
                             "topics": ["chit-chat", "interview", "love", "other"],
                             "max_candidates": MAX_CANDIDATES})

    @router.post("/playground/api/chat")
    async def chat(request: Request):
        backend = pg.chat_backend
        try:
            body = await oa.read_json(request)
            n = body.get("n", 1)
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CANDIDATES:
                raise oa.APIError(400, f"'n' must be 1 to {MAX_CANDIDATES}", param="n")
            req_body, prompt = _prepare(backend, body)
            reqs = [oa.gen_request(backend.state, req_body, prompt.ids) for _ in range(n)]
            queues = oa.submit(backend.state, *reqs)  # the n candidates join one batch
            queues = queues if isinstance(queues, list) else [queues]
        except oa.APIError as exc:
            return _error(exc.status, exc.message, exc.param)

        async def frames():
            yield {"type": "start", "rendered": prompt.messages, "model": backend.model,
                   "character_prompt": prompt.policy,
                   "candidates": [{"position": i, "sampling": _sampling(r)} for i, r in enumerate(reqs)]}
            async with contextlib.aclosing(oa.candidate_events(reqs, queues)) as events:
                async for i, kind, value in events:
                    if kind == "text":
                        yield {"type": "delta", "candidate": i, "text": value}
                    else:  # one candidate failing leaves the others streaming
                        yield {"type": "done", "candidate": i, "text": reqs[i].text,
                               "finish_reason": value if kind == "done" else "error",
                               **({"error": value} if kind == "error" else {})}
            yield {"type": "end"}

        return oa.event_stream(frames())

    @router.post("/playground/api/arena")
    async def arena(request: Request):
        if pg.arena is None:
            return _error(404, "the arena needs two models: start the playground with --arena "
                          "(e.g. --arena staging, --arena 2, or --arena-model DIR)")
        try:
            body = await oa.read_json(request)
            pair = [pg.backend(k) for k in pg.arena]
            if draw_order():
                pair.reverse()
            replies, rendered = [], None
            for b in pair:
                req_body, prompt = _prepare(b, body)
                rendered = rendered or prompt.messages
                req = oa.gen_request(b.state, req_body, prompt.ids)
                replies.append((b, req, oa.submit(b.state, req), prompt.character))
            texts = await asyncio.gather(*(oa.run_to_end(req, q) for _, req, q, _ in replies))
        except oa.APIError as exc:
            return _error(exc.status, exc.message, exc.param)
        char = replies[0][3]
        match = {"rendered": rendered, "at": now_iso(), "character": char.name if char else None,
                 "category": char.profile.category if char else None,
                 "topic": body.get("topic") if isinstance(body.get("topic"), str) else None,
                 "conversation": body.get("conversation"), "turn": body.get("turn"),
                 "candidates": [{"text": t, "position": i, "sampling": _sampling(req), "model": b.model}
                                for i, (t, (b, req, _, _)) in enumerate(zip(texts, replies, strict=True))]}
        match_id = pg.matches.add(match)
        return JSONResponse({"match": match_id, "rendered": rendered,
                             "candidates": [{"position": c["position"], "text": c["text"]}
                                            for c in match["candidates"]]})

    async def store_event(event: dict, raw_size: int) -> JSONResponse:
        try:
            result = await asyncio.to_thread(append_event, pg.store, event, raw_size=raw_size)
        except EventError as exc:
            return _error(exc.status, str(exc), exc.field)
        status = 201 if result["status"] == "created" else 200
        return JSONResponse({"status": result["status"], "id": result["event"]["id"]}, status_code=status)

    @router.post("/playground/api/arena/vote")
    async def vote(request: Request):
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        match = pg.matches.get(str(body.get("match")))
        if match is None:
            return _error(404, "unknown or expired arena match (this server did not make it, or it "
                          "restarted): ask for a new pair", "match")
        models = [c["model"] for c in match["candidates"]]
        anonymous = not any(names_model(c["text"], models) for c in match["candidates"])
        # Without the client's time, the match's: a resent vote is then the same event.
        event = {"id": body.get("id"), "at": body.get("at") or match["at"], "source": "playground",
                 "model": {"name": pg.name, "version": None, "sha256": None},
                 "character": match["character"], "category": match["category"],
                 "topic": match["topic"], "conversation": match["conversation"] or f"arena-{body.get('match')}",
                 "turn": match["turn"] if isinstance(match["turn"], int) else 0,
                 "messages": match["rendered"], "candidates": match["candidates"],
                 "action": {"kind": "vote", "winner": body.get("winner"), "anonymous": anonymous}}
        answer = await store_event(event, len(raw))
        if answer.status_code >= 400:
            return answer
        stored = json.loads(answer.body)
        return JSONResponse({**stored, "anonymous": anonymous,
                             "reveal": {"a": model_label(models[0]), "b": model_label(models[1])}},
                            status_code=answer.status_code)

    @router.post("/playground/api/feedback")
    async def feedback(request: Request):
        raw = await request.body()
        if len(raw) > MAX_EVENT_BYTES:
            return _error(413, f"the event is {len(raw)} bytes, over the limit of {MAX_EVENT_BYTES}")
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the request body is not valid JSON")
        if isinstance(event, dict) and isinstance(event.get("model"), dict):
            # Chat feedback is filed under the playground's name, whatever the page says.
            event["model"] = {**event["model"], "name": pg.name}
        try:
            check_event(event, raw_size=len(raw))
        except EventError as exc:
            return _error(exc.status, str(exc), exc.field)
        return await store_event(event, len(raw))

    @router.get("/playground/api/leaderboard")
    async def board() -> JSONResponse:
        events = await asyncio.to_thread(read_events, pg.store, pg.name)
        return JSONResponse(await asyncio.to_thread(leaderboard, events, production=pg.production))

    return router
