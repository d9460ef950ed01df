"""Registry stages: ``none -> staging -> production -> archived``, as an append-only history.

Every change of stage is one *event*, a JSON object at ``registry/<name>/stages/<seq>.json``
(``seq`` = 1, 2, ...). An event records what changed (``changes``: version, from, to), who and
why (``actor``, ``reason``, ``force``), the gate's decision when there was one, and the whole
stage map after it (``stages``: version -> stage), so the current state is the last event alone.
Each event names its parent (the id of event ``seq - 1``).

Why it is safe under concurrent promoters: an event is created with a conditional write
(``Store.put_json_if_absent``: S3 ``If-None-Match: *``, ``link(2)`` on a local directory), and
it is computed from event ``seq - 1``. Two promoters that read the same last event race for the
same key; exactly one creates it, the other re-reads the new last event, re-checks its change
against it and tries the next key. So the history is one line, no change is lost, and every
stage map (hence every reader) has at most one production version, never zero once one was
promoted::

    from charops.registry import history, production, rollback, stage_of, transition
    transition(store, "charops-chat", 3, "production", actor="ana", reason="beats v2")
    production(store, "charops-chat")["version"]                # 3
    rollback(store, "charops-chat", actor="ana", reason="v3 answers in English")   # v2 again
    [(e["seq"], e["version"], e["to"]) for e in history(store, "charops-chat")]
"""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from types import EllipsisType
from typing import Any

from charops.registry.entries import (
    RegistryError,
    check_name,
    check_version,
    get_entry,
    list_versions,
)
from charops.storage.store import StorageError

STAGES = ("none", "staging", "production", "archived")
# Where a version may go from each stage. Production is left only by being archived (when
# another version is promoted, or by rollback); a version goes back to production through
# staging or straight from archived (rollback).
ALLOWED = {"none": ("staging", "production"), "staging": ("production", "archived"),
           "production": ("archived",), "archived": ("staging", "production")}
EVENT_SCHEMA = "charops.stage_event/v1"
# Conflicts only happen while another promoter appends; a few dozen tries with jittered
# backoff (~10 s in all at most) outlast any realistic crowd of promoters.
MAX_ATTEMPTS = 40
_EVENT_RE = re.compile(r"/stages/(\d+)\.json$")


def stages_prefix(name: str) -> str:
    return f"registry/{check_name(name)}/stages/"


def event_key(name: str, seq: int) -> str:
    return f"{stages_prefix(name)}{seq:08d}.json"


def check_stage(stage: str, allowed: tuple[str, ...] = STAGES[1:]) -> str:
    if stage not in allowed:
        raise RegistryError(f"stage '{stage}': use one of {', '.join(allowed)}")
    return stage


def current_actor() -> str:
    """Who is acting: ``$CHAROPS_ACTOR`` (e.g. set by CI), else the login name."""
    actor = os.environ.get("CHAROPS_ACTOR", "").strip()
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"uid:{os.getuid()}"


def _event_seqs(store: Any, name: str) -> list[int]:
    return sorted(int(m.group(1)) for k in store.list(stages_prefix(name))
                  if (m := _EVENT_RE.search(k)))


# The fields of an event readers rely on, and their types (see ``_append``).
_EVENT_FIELDS = {"seq": int, "id": str, "kind": str, "version": int, "from": str, "to": str,
                 "changes": list, "stages": dict, "actor": str, "reason": str, "force": bool,
                 "at": str}


def _event_problem(event: Any) -> str | None:
    """What is wrong with a stored event's shape, None when it is one ``_append`` wrote."""
    if not isinstance(event, dict):
        return f"it holds a JSON {type(event).__name__}, not an object"
    for field, kind in _EVENT_FIELDS.items():
        value = event.get(field)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"its '{field}' is missing or not a {kind.__name__}"
    if not (event.get("parent") is None or isinstance(event["parent"], str)) or \
            not (event.get("gate") is None or isinstance(event["gate"], dict)):
        return "its 'parent' or 'gate' has the wrong type"
    if not event["changes"] or not all(
            isinstance(c, dict) and isinstance(c.get("version"), int) and not isinstance(c["version"], bool)
            and c.get("from") in STAGES and c.get("to") in STAGES for c in event["changes"]):
        return "its 'changes' are not a list of {version, from, to} with known stages"
    if not all(isinstance(v, str) and v.isdigit() and s in STAGES for v, s in event["stages"].items()):
        return "its 'stages' do not map version numbers to known stages"
    return None


def _read_event(store: Any, name: str, seq: int) -> dict:
    key = event_key(name, seq)
    event = store.get_json(key)
    if (problem := _event_problem(event)) is not None:
        raise RegistryError(f"{store.url_for(key)}: not a charops stage event ({problem}); the "
                            "stage history was written by hand or damaged: restore it from a backup")
    return event


def _last_event(store: Any, name: str) -> dict | None:
    seqs = _event_seqs(store, name)
    return _read_event(store, name, seqs[-1]) if seqs else None


def history(store: Any, name: str) -> list[dict]:
    """All stage events of ``name``, oldest first; a broken line is an error saying where."""
    events = [_read_event(store, name, s) for s in _event_seqs(store, name)]
    parent = None
    for i, event in enumerate(events, start=1):
        if event.get("seq") != i or event.get("parent") != parent:
            raise RegistryError(f"stage history of '{name}' is inconsistent at event {i} "
                                f"({store.url_for(event_key(name, i))}): events were deleted "
                                "or written by hand; restore them from a backup")
        parent = event["id"]
    return events


def stages(store: Any, name: str) -> dict[int, str]:
    """Version -> stage for every version that ever left ``none``."""
    last = _last_event(store, name)
    return {int(v): s for v, s in (last["stages"] if last else {}).items()}


def stage_of(store: Any, name: str, version: int | str) -> str:
    """The stage of a registered version (``none`` until it is first promoted)."""
    version = check_version(version)
    if version not in list_versions(store, name):
        get_entry(store, name, version)  # raises the registry's one-line error
    return stages(store, name).get(version, "none")


def version_in(store: Any, name: str, stage: str) -> int | None:
    """The (newest) version of ``name`` in ``stage`` (production has at most one)."""
    found = [v for v, s in stages(store, name).items() if s == check_stage(stage)]
    return max(found) if found else None


def production(store: Any, name: str) -> dict | None:
    """The registry entry of the production version of ``name``, None when there is none."""
    version = version_in(store, name, "production")
    return get_entry(store, name, version) if version is not None else None


def production_uri(store: Any, name: str) -> str | None:
    """The model URI of ``name``'s production version, None when there is none: the baseline a
    new candidate is evaluated against, since the promotion gate compares with production."""
    entry = production(store, name)
    return entry["model_uri"] if entry else None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


# A plan looks at the last event (None before the first) and returns the event's content:
# {"kind", "version", "changes": [(version, from, to), ...]} or raises RegistryError; it is
# re-run against the new last event after every lost race.
Plan = Callable[[dict | None], dict]


def _append(store: Any, name: str, plan: Plan, *, actor: str, reason: str, force: bool,
            gate: dict | None) -> dict:
    for attempt in range(MAX_ATTEMPTS):
        last = _last_event(store, name)
        content = plan(last)
        if content.get("noop"):
            return content["noop"]
        state = dict(last["stages"]) if last else {}
        for version, _from, to in content["changes"]:
            state[str(version)] = to
        if sum(1 for s in state.values() if s == "production") > 1:
            raise AssertionError(f"plan made two production versions: {state}")  # a bug here
        seq = last["seq"] + 1 if last else 1
        event = {
            "schema": EVENT_SCHEMA, "seq": seq, "id": uuid.uuid4().hex,
            "parent": last["id"] if last else None, "name": name,
            "kind": content["kind"], "version": content["version"],
            "from": content["changes"][0][1], "to": content["changes"][0][2],
            "changes": [{"version": v, "from": f, "to": t} for v, f, t in content["changes"]],
            "stages": state, "actor": actor, "reason": reason, "force": force, "gate": gate,
            "at": _now(),
        }
        if store.put_json_if_absent(event_key(name, seq), event) is not None:
            return event
        # Lost the race, or won it on an earlier try whose reply was lost (the client retries a
        # PUT on 5xx): the stored event tells which.
        try:
            stored = store.get_json(event_key(name, seq))
            if isinstance(stored, dict) and stored.get("id") == event["id"]:
                return event
        except StorageError:
            pass
        time.sleep(random.uniform(0, min(0.5, 0.02 * 2 ** min(attempt, 5))))
    raise RegistryError(f"could not record the stage change of '{name}' after {MAX_ATTEMPTS} "
                        "attempts: other promoters keep changing it; retry")


def _check_reason(force: bool, reason: str) -> None:
    if force and not reason.strip():
        raise RegistryError("--force needs --reason: say why the gate is overridden (it is "
                            "recorded in the stage history)")


def transition(store: Any, name: str, version: int | str, to: str, *, actor: str, reason: str,
               force: bool = False, gate: dict | None = None,
               expect_production: int | None | EllipsisType = ...) -> dict:
    """Move ``version`` to stage ``to``; the recorded event.

    Promoting to production archives the current production version in the same event.
    Moving a version to the stage it is in changes nothing and returns the event that put it
    there (a retried pipeline step is not an error). ``force`` and ``gate`` are recorded as
    given: the promotion gate (``charops.registry.gate``) decides, this records.
    ``expect_production`` (a version, or None for none) makes the change conditional on the
    production version being that one when the event is appended: the gate compared against
    it, and a promotion by someone else in between must not slip past the gate.
    """
    version = check_version(version)
    to = check_stage(to)
    get_entry(store, name, version)
    _check_reason(force, reason)

    def plan(last: dict | None) -> dict:
        state = last["stages"] if last else {}
        current = state.get(str(version), "none")
        if current == to:  # the event that put it there, looked for from the newest back
            for seq in range(last["seq"], 0, -1):
                event = last if seq == last["seq"] else _read_event(store, name, seq)
                if any(c["version"] == version and c["to"] == to for c in event["changes"]):
                    return {"noop": event}
        if to not in ALLOWED[current]:
            raise RegistryError(f"'{name}' v{version} is {current}: it can move to "
                                f"{' or '.join(ALLOWED[current])}, not {to}")
        now = next((int(v) for v, s in state.items() if s == "production"), None)
        if expect_production is not ... and now != expect_production:
            raise RegistryError(f"'{name}': production changed to v{now} while v{version} was "
                                f"gated against {_label(expect_production)}; run the promotion "
                                "again")
        changes = [(version, current, to)]
        if to == "production":
            changes += [(int(v), "production", "archived") for v, s in state.items()
                        if s == "production"]
        return {"kind": "promote" if to in ("staging", "production") else "archive",
                "version": version, "changes": changes}

    return _append(store, name, plan, actor=actor, reason=reason, force=force, gate=gate)


def _label(version: int | None) -> str:
    return "the base model" if version is None else f"v{version}"


def previous_production(events: list[dict], current: int) -> int | None:
    """The version that was production right before ``current`` last became production."""
    for event in reversed(events):
        if any(c["version"] == current and c["to"] == "production" for c in event["changes"]):
            before = [c["version"] for c in event["changes"] if c["from"] == "production"]
            return before[0] if before else None
    return None


def rollback(store: Any, name: str, *, actor: str, reason: str) -> dict:
    """Make the previous production version production again, archiving the current one.

    Returns the registry entry of the version now in production.
    """
    check_name(name)

    def plan(last: dict | None) -> dict:
        state = last["stages"] if last else {}
        current = [int(v) for v, s in state.items() if s == "production"]
        if not current:
            raise RegistryError(f"'{name}' has no production version to roll back")
        previous = previous_production(history(store, name), current[0])
        if previous is None:
            raise RegistryError(f"'{name}' v{current[0]} was the first production version: "
                                "there is nothing to roll back to")
        return {"kind": "rollback", "version": previous,
                "changes": [(previous, state[str(previous)], "production"),
                            (current[0], "production", "archived")]}

    event = _append(store, name, plan, actor=actor, reason=reason, force=False, gate=None)
    return get_entry(store, name, event["version"])
