"""Feedback events -> TRL conversational preference data (DPO pairs or KTO rows).

    charops feedback export --model charops-chat --since 2026-12-01 --format dpo --out data/fb
    python -c "from charops.feedback.export import export; ..."

What each action becomes (one plain function each, below):

=====================================  =====================================================
arena vote A or B better               a pair (winner's reply, loser's reply)
swipe chosen and continued             the chosen candidate against each one passed over
edit                                   a pair (edited text, original reply)
stars, gap of 2 or more on one turn    a pair (higher rated, lower rated)
thumbs up / down                       a KTO row, label true / false
tie                                    dropped
both bad                               two KTO rows, label false
=====================================  =====================================================

``--format dpo`` keeps the pairs (KTO-only signal is dropped with its reason); ``--format kto``
keeps the KTO rows and unpairs every pair into a desirable and an undesirable row (TRL's
``unpair_preference_dataset``). Rows are deduplicated, carry the rendered prompt exactly as the
model saw it (system prompt included), and are split into train/validation by conversation, so
no conversation is on both sides. Output::

    OUT/dpo/{train,validation}.jsonl   {"id", "character", "conversation", "source",
                                        "prompt": [...], "chosen": [...], "rejected": [...]}
    OUT/kto/{train,validation}.jsonl   {"id", ..., "prompt": [...], "completion": [...], "label"}
    OUT/feedback_summary.yaml          read = used + dropped per source, with reasons

``charops data prepare OUT`` reads these files as they are (the ``trl`` importer); the summary
is YAML so that prepare, which reads every ``.json``/``.jsonl`` under a folder, leaves it alone.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charops.errors import CharopsError
from charops.io import atomic_dir, check_output, write_jsonl

FORMATS = ("dpo", "kto")
STAR_GAP = 2
SPLITS = ("train", "validation")
SUMMARY = "feedback_summary.yaml"


@dataclass(frozen=True)
class Pair:
    prompt: tuple  # tuple of (role, content): hashable, exactly as rendered
    chosen: str
    rejected: str


@dataclass(frozen=True)
class Unpaired:
    prompt: tuple
    completion: str
    label: bool


Row = Pair | Unpaired
# A mapping returns the rows an event gives and, when it gives none, why it was dropped.
Mapped = tuple[list[Row], str | None]


def _prompt(event: dict) -> tuple:
    return tuple((m["role"], m["content"]) for m in event["messages"])


def _text(event: dict, index: int) -> str:
    return event["candidates"][index]["text"]


def _by_position(event: dict) -> list[dict]:
    return sorted(event["candidates"], key=lambda c: c["position"])


# -- one function per action ------------------------------------------------------------------

def map_vote(event: dict) -> Mapped:
    """Arena: A/B better -> (winner, loser); tie -> dropped; both bad -> two KTO negatives.
    ``a`` is the candidate shown at position 0. A vote whose replies named their model was
    not blind and is dropped."""
    action = event["action"]
    if not action.get("anonymous", True):
        return [], "non-anonymous vote (a reply named its model)"
    a, b = (c["text"] for c in _by_position(event))
    prompt = _prompt(event)
    winner = action["winner"]
    if winner == "tie":
        return [], "tie"
    if winner == "both_bad":
        return [Unpaired(prompt, a, False), Unpaired(prompt, b, False)], None
    if a.strip() == b.strip():
        return [], "identical replies"
    chosen, rejected = (a, b) if winner == "a" else (b, a)
    return [Pair(prompt, chosen, rejected)], None


def map_choose(event: dict) -> Mapped:
    """Swipes: the candidate chosen and continued against every candidate passed over."""
    action = event["action"]
    if not action.get("continued"):
        return [], "swipe chosen but not continued"
    chosen = _text(event, action["candidate"])
    prompt = _prompt(event)
    rows: list[Row] = [Pair(prompt, chosen, c["text"]) for i, c in enumerate(event["candidates"])
                       if i != action["candidate"] and c["text"].strip() != chosen.strip()]
    return (rows, None) if rows else ([], "no other candidate was passed over")


def map_edit(event: dict) -> Mapped:
    """An edit: (the user's text, the model's original)."""
    original = _text(event, event["action"]["candidate"])
    edited = event["action"]["text"]
    if edited.strip() == original.strip():
        return [], "edit changed nothing"
    return [Pair(_prompt(event), edited, original)], None


def map_thumbs(event: dict) -> Mapped:
    """Thumbs up/down: one KTO row, label true/false."""
    action = event["action"]
    return [Unpaired(_prompt(event), _text(event, action["candidate"]), action["up"])], None


def map_stars(events: list[dict]) -> tuple[list[Row], dict[str, str]]:
    """Star ratings of the candidates of one turn (same conversation, turn and prompt): a pair
    for every two candidates rated ``STAR_GAP`` or more apart. The latest rating of a candidate
    counts. Returns the rows and, for each event that gave none, why."""
    latest: dict[str, tuple[str, int, str]] = {}  # text -> (at, stars, event id)
    for e in sorted(events, key=lambda e: (e["at"], e["id"])):
        latest[_text(e, e["action"]["candidate"])] = (e["at"], e["action"]["stars"], e["id"])
    prompt = _prompt(events[0])
    rows: list[Row] = []
    used: set[str] = set()
    items = sorted(latest.items(), key=lambda kv: -kv[1][1])
    for i, (hi_text, (_, hi, hi_id)) in enumerate(items):
        for lo_text, (_, lo, lo_id) in items[i + 1:]:
            if hi - lo >= STAR_GAP:
                rows.append(Pair(prompt, hi_text, lo_text))
                used.update((hi_id, lo_id))
    superseded = {e["id"] for e in events} - {v[2] for v in latest.values()}
    dropped = {}
    for e in events:
        if e["id"] in superseded:
            dropped[e["id"]] = "star rating replaced by a later one"
        elif e["id"] not in used:
            dropped[e["id"]] = f"no other candidate of the turn rated {STAR_GAP}+ stars apart"
    return rows, dropped


SINGLE = {"vote": map_vote, "choose": map_choose, "edit": map_edit, "thumbs": map_thumbs}


# -- the export -------------------------------------------------------------------------------

def conversation_split(source: str, conversation: str, validation_fraction: float) -> str:
    """train or validation, from a hash of the conversation: stable, and a conversation never
    straddles the two."""
    h = int(hashlib.sha256(f"{source}\0{conversation}".encode()).hexdigest()[:8], 16)
    return "validation" if h / 0xFFFFFFFF < validation_fraction else "train"


def _messages(prompt: tuple) -> list[dict]:
    return [{"role": r, "content": c} for r, c in prompt]


def _row_id(row: Row) -> str:
    payload = json.dumps([list(row.prompt), *((row.chosen, row.rejected) if isinstance(row, Pair)
                                               else (row.completion, row.label))], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _unpair(row: Row) -> list[Unpaired]:
    if isinstance(row, Unpaired):
        return [row]
    return [Unpaired(row.prompt, row.chosen, True), Unpaired(row.prompt, row.rejected, False)]


def map_events(events: Iterable[dict], fmt: str) -> tuple[list[tuple[dict, Row]], dict]:
    """(event, row) for every row the events give in ``fmt``, and the per-source counts:
    ``{source: {"read", "used", "dropped": {reason: n}}}`` with read = used + dropped."""
    if fmt not in FORMATS:
        raise CharopsError(f"--format '{fmt}': use dpo or kto")
    counts: dict[str, dict] = defaultdict(lambda: {"read": 0, "used": 0, "dropped": Counter()})
    produced: list[tuple[dict, Row]] = []
    outcome: dict[str, list[Row] | str] = {}  # event id -> rows, or the reason it gave none
    events = list(events)
    stars: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        if e["action"]["kind"] == "stars":
            stars[(e["source"], e["conversation"], e["turn"], _prompt(e))].append(e)
        else:
            rows, reason = SINGLE[e["action"]["kind"]](e)
            outcome[e["id"]] = rows if rows else reason
    for group in stars.values():
        rows, dropped = map_stars(group)
        for e in group:
            outcome[e["id"]] = dropped.get(e["id"]) or []
        if rows:  # the pairs belong to the group; they are listed under its first used event
            first = next(e for e in group if e["id"] not in dropped)
            outcome[first["id"]] = rows
    seen: set[tuple] = set()
    for e in events:
        c = counts[e["source"]]
        c["read"] += 1
        got = outcome[e["id"]]
        if isinstance(got, str):
            c["dropped"][got] += 1
            continue
        if fmt == "dpo":
            rows = [r for r in got if isinstance(r, Pair)]
            if got and not rows:
                c["dropped"]["unpaired signal (thumbs, both bad): export --format kto"] += 1
                continue
        else:
            rows = [u for r in got for u in _unpair(r)]
        fresh = []
        for r in rows:
            key = (r.prompt, r.chosen, r.rejected) if isinstance(r, Pair) else (r.prompt, r.completion, r.label)
            if key not in seen:
                seen.add(key)
                fresh.append(r)
        if rows and not fresh:
            c["dropped"]["duplicate of an earlier row"] += 1
            continue
        if not rows and not fresh:  # a stars event whose pairs are listed under another one
            c["used"] += 1
            continue
        c["used"] += 1
        produced += [(e, r) for r in fresh]
    summary = {s: {"read": c["read"], "used": c["used"], "dropped": dict(sorted(c["dropped"].items()))}
               for s, c in sorted(counts.items())}
    return produced, summary


def to_trl_row(event: dict, row: Row) -> dict:
    """The TRL conversational row (plus where it came from)."""
    out: dict[str, Any] = {"id": f"fb-{_row_id(row)}", "character": event.get("character"),
                           "topic": event.get("topic"), "conversation": event["conversation"],
                           "source": f"{event['source']}:{event['id']}",
                           "prompt": _messages(row.prompt)}
    if isinstance(row, Pair):
        out["chosen"] = [{"role": "assistant", "content": row.chosen}]
        out["rejected"] = [{"role": "assistant", "content": row.rejected}]
    else:
        out["completion"] = [{"role": "assistant", "content": row.completion}]
        out["label"] = row.label
    return out


def export_rows(events: Iterable[dict], fmt: str, validation_fraction: float = 0.1,
                ) -> tuple[dict[str, list[dict]], dict]:
    produced, sources = map_events(events, fmt)
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for event, row in produced:
        split = conversation_split(event["source"], event["conversation"], validation_fraction)
        splits[split].append(to_trl_row(event, row))
    summary = {"format": fmt, "sources": sources,
               "read": sum(s["read"] for s in sources.values()),
               "used": sum(s["used"] for s in sources.values()),
               "dropped": sum(sum(s["dropped"].values()) for s in sources.values()),
               "rows": {s: len(splits[s]) for s in SPLITS},
               "conversations": {s: len({r["conversation"] for r in splits[s]}) for s in SPLITS},
               "validation_fraction": validation_fraction}
    return splits, summary


def write_export(splits: dict[str, list[dict]], summary: dict, out: str | Path, *,
                 overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> Path:
    """Write OUT/<format>/{train,validation}.jsonl and OUT/feedback_summary.yaml, all at once."""
    import yaml

    out = check_output(out, inputs=[("the input", src) for src in inputs], overwrite=overwrite,
                       option="--out")
    if sum(len(v) for v in splits.values()) == 0:
        raise CharopsError(f"no {summary['format']} rows: {summary['read']} event(s) read, none usable "
                           f"({json.dumps({s: v['dropped'] for s, v in summary['sources'].items()}, ensure_ascii=False)})")
    with atomic_dir(out, overwrite=True) as tmp:
        for split in SPLITS:
            write_jsonl(tmp / summary["format"] / f"{split}.jsonl", splits[split])
        (tmp / SUMMARY).write_text(yaml.safe_dump(summary, allow_unicode=True, sort_keys=True),
                                   encoding="utf-8")
    return out


def export(store: Any, name: str, fmt: str, out: str | Path, *, since: str | None = None,
           validation_fraction: float = 0.1, overwrite: bool = False) -> dict:
    """Read ``name``'s events from ``store`` and write the export; returns the summary."""
    from charops.feedback.store import read_events

    if not 0.0 <= validation_fraction < 1.0:
        raise CharopsError(f"validation_fraction {validation_fraction}: use a number in [0, 1)")
    events = read_events(store, name, since=since)
    splits, summary = export_rows(events, fmt, validation_fraction)
    summary.update(model=name, since=since, store=store.url)
    write_export(splits, summary, out, overwrite=overwrite)
    return summary
