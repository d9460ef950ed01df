"""The arena's bookkeeping: blind matches, the anonymity rule, and the leaderboard.

A match is two replies to one user turn from two models, in an order drawn at random
(``secrets``) and recorded: position 0 is shown on the left as "A". The vote becomes a feedback
event whose candidates name their models; until then the page knows only "A" and "B".

A vote is discarded as non-anonymous (stored with ``anonymous: false``, left out of the
leaderboard and the export) when either reply names a model of the match: its registry name
with or without the version (``charops-chat v3``, ``charops-chat:3``), ``v3``/``version 3``
next to the name, or the label the playground shows after the vote::

    from charops.serve.playground.arena import leaderboard, names_model
    names_model("I am charops-chat v2!", [{"name": "charops-chat", "version": 2, "label": "v2"}])
    leaderboard(events, production="charops-chat v1")
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

from charops.eval.stats import bradley_terry, pairwise_table

MAX_MATCHES = 2000  # pending matches kept per server; the oldest are forgotten first
MATCH_TTL_S = 6 * 3600


def model_label(model: dict) -> str:
    """How a model is named on the leaderboard: ``NAME vN``, or its label (a model directory)."""
    if model.get("label"):
        return model["label"]
    return f"{model['name']} v{model['version']}" if model.get("version") else model["name"]


def _mentions(model: dict) -> list[re.Pattern]:
    pats = []
    name = model.get("name")
    version = model.get("version")
    if name:
        pats.append(re.compile(re.escape(name), re.I))
    if version:
        pats.append(re.compile(rf"(?<![\w.])(v|version\s*){version}(?![\w.])", re.I))
    label = model.get("label")
    if label and len(label) >= 3:
        pats.append(re.compile(re.escape(label), re.I))
    return pats


def names_model(text: str, models: list[dict]) -> bool:
    """Whether ``text`` names any of ``models`` (name, version or label)."""
    return any(p.search(text) for m in models for p in _mentions(m))


class Matches:
    """Pending arena matches of this server: id -> what the vote needs (thread-safe, bounded)."""

    def __init__(self, limit: int = MAX_MATCHES, ttl_s: float = MATCH_TTL_S):
        self._items: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()
        self.limit, self.ttl_s = limit, ttl_s

    def add(self, match: dict) -> str:
        match_id = secrets.token_urlsafe(12)
        with self._lock:
            self._items[match_id] = (time.monotonic(), match)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return match_id

    def get(self, match_id: str) -> dict | None:
        with self._lock:
            item = self._items.get(match_id)
        if item is None or time.monotonic() - item[0] > self.ttl_s:
            return None
        return item[1]


def draw_order() -> bool:
    """True: swap the two models (the second one is shown as A). A fair coin from ``secrets``."""
    return secrets.randbelow(2) == 1


VERDICT_FOR_A = {"a": "win", "b": "lose", "tie": "tie", "both_bad": "tie"}


def vote_records(events: list[dict]) -> list[tuple[str, str, str, dict]]:
    """(model at A, model at B, verdict for A, event) of every counted arena vote."""
    out = []
    for e in events:
        action = e["action"]
        if action["kind"] != "vote" or not action.get("anonymous", True):
            continue
        cands = sorted(e["candidates"], key=lambda c: c["position"])
        if any("model" not in c for c in cands):
            continue
        a, b = (model_label(c["model"]) for c in cands)
        if a == b:
            continue
        out.append((a, b, VERDICT_FOR_A[action["winner"]], e))
    return out


def _ranked(records: list[tuple[str, str, str]], seed: int, resamples: int) -> list[dict]:
    bt = bradley_terry(records, resamples=resamples, seed=seed)
    rows = [{"model": m, **v} for m, v in bt["models"].items()]
    return sorted(rows, key=lambda r: -r["score"])


def leaderboard(events: list[dict], *, production: str | None = None, resamples: int = 200,
                seed: int = 0) -> dict:
    """Bradley-Terry scores with bootstrap intervals, overall and per character category and
    topic, and each model's win/tie/lose against ``production`` (CharacterGLM's pair-wise shape:
    win %, tie %, lose %, Advantage = win - lose, with its interval and sign test)."""
    votes = vote_records(events)
    triples = [(a, b, v) for a, b, v, _ in votes]
    out: dict[str, Any] = {"votes": len(votes), "overall": _ranked(triples, seed, resamples),
                           "by_category": {}, "by_topic": {}, "production": production,
                           "against_production": {}}
    for key, field in (("by_category", "category"), ("by_topic", "topic")):
        groups: dict[str, list] = {}
        for a, b, v, e in votes:
            groups.setdefault(e.get(field) or "other", []).append((a, b, v))
        out[key] = {g: _ranked(rs, seed, resamples) for g, rs in sorted(groups.items())}
    if production:
        flip = {"win": "lose", "lose": "win", "tie": "tie"}
        per: dict[str, list[str]] = {}
        for a, b, v, _ in votes:
            if a == production and b != production:
                per.setdefault(b, []).append(flip[v])
            elif b == production and a != production:
                per.setdefault(a, []).append(v)
        out["against_production"] = {m: pairwise_table(vs, resamples=resamples, seed=seed)
                                     for m, vs in sorted(per.items())}
    return out
