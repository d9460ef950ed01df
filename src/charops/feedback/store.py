"""Feedback events in the artifact store: append-only, one object per event, no lock.

Layout (``charops.storage.open_store``: a local directory or S3)::

    feedback/<model name>/events/<YYYY-MM-DD>/<event id>.json

The key comes from the event alone (its model, its client-made id and the day of its own
``at``), so a retry lands on the same key. Each event is created with the registry's
conditional write (``Store.put_json_if_absent``: ``If-None-Match: *`` on S3, a complete
fsynced temp file ``link(2)``-ed into place on a local directory): of two replicas writing the
same id exactly one creates it, the other finds it; writers of different ids never touch the
same key. So any number of server replicas append without a lock, a crash or SIGKILL loses at
most the event being written (its temp file is a hidden name no listing shows), and no event
ever overwrites another::

    from charops.feedback.store import append_event, read_events
    from charops.storage import open_store
    store = open_store(".charops/store")
    result = append_event(store, event)        # {"status": "created" | "duplicate", "key": ...}
    events = read_events(store, "charops-chat", since="2026-12-01")
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from charops.feedback.events import EventError, check_event, now_iso, parse_time, same_event
from charops.registry import RegistryError, check_name
from charops.storage.store import StorageError

_DAY_RE = re.compile(r"/events/(\d{4}-\d{2}-\d{2})/[^/]+\.json$")


def events_prefix(name: str) -> str:
    return f"feedback/{check_name(name)}/events/"


def event_key(event: dict) -> str:
    day = event["at"][:10]
    return f"{events_prefix(event['model']['name'])}{day}/{event['id']}.json"


def append_event(store: Any, event: Any, *, raw_size: int | None = None) -> dict:
    """Check and store one event. Returns ``{"status": "created"|"duplicate", "key", "event"}``.

    A resent event (same id, same content) is a ``duplicate`` and changes nothing; another
    event under an existing id is refused (EventError, status 409).
    """
    checked = check_event(event, raw_size=raw_size)
    try:
        check_name(checked["model"]["name"])
    except RegistryError as exc:
        raise EventError(f"event field 'model.name': {exc}", "model.name") from None
    checked.setdefault("received_at", now_iso())
    key = event_key(checked)
    if store.put_json_if_absent(key, checked) is not None:
        return {"status": "created", "key": key, "event": checked}
    existing = store.get_json(key)
    if same_event(existing, checked):
        return {"status": "duplicate", "key": key, "event": existing}
    raise EventError(f"event id '{checked['id']}' is already stored with other content; a client "
                     "makes a new id for every action", "id", 409)


def _day(value: str | _dt.date | _dt.datetime | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value.astimezone(_dt.UTC).date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    return parse_time(value, "since").date().isoformat()


def read_events(store: Any, name: str, *, since: str | _dt.datetime | None = None) -> list[dict]:
    """Every stored event of model ``name`` at or after ``since`` (a day or an ISO time), oldest
    first (by ``at``, then id). An unreadable object is an error naming its key."""
    since_day = _day(since)
    since_time = parse_time(since, "since") if isinstance(since, str) and "T" in since else (
        since if isinstance(since, _dt.datetime) else None)
    out = []
    for key in store.list(events_prefix(name)):
        m = _DAY_RE.search(key)
        if not m or (since_day and m.group(1) < since_day):
            continue
        try:
            event = store.get_json(key)
        except StorageError as exc:
            raise StorageError(f"feedback event {store.url_for(key)}: {exc}") from None
        if since_time is not None and parse_time(event["at"]) < since_time:
            continue
        out.append(event)
    out.sort(key=lambda e: (e["at"], e["id"]))
    return out
