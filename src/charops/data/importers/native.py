"""charops' native JSONL: one profile, dialogue, preference or document object per line.

The ``type`` field may be left out; it is then inferred from the keys (``turns`` -> dialogue,
``chosen``/``rejected`` -> preference, ``text`` -> document, ``name`` -> profile). A dialogue,
preference or document without ``id`` gets ``<file stem>-<line>``; a dialogue or preference
without ``character`` gets the ``--character`` option when one is given. A JSON array of the
same objects is read too (``#<index>`` instead of ``:<line>``)::

    from pathlib import Path
    from charops.data.importers import native
    parsed = native.parse(Path("dialogues.jsonl"), "dialogues.jsonl")
"""

from __future__ import annotations

from pathlib import Path

from charops.data.importers.common import Parsed, Reject, build, json_objects
from charops.data.schema import MODELS


def infer_type(obj: dict) -> str | None:
    """The record type named by ``type``, else the one its keys give away (None: unknown)."""
    if "type" in obj:
        return obj["type"] if isinstance(obj["type"], str) and obj["type"] in MODELS else None
    if "turns" in obj:
        return "dialogue"
    if "chosen" in obj or "rejected" in obj:
        return "preference"
    if "text" in obj:
        return "document"
    if "name" in obj:
        return "profile"
    return None


def parse(path: Path, display: str, character: str | None = None) -> Parsed:
    out = Parsed()
    for unit in json_objects(path, display, None, out):
        obj = unit.value
        rtype = infer_type(obj)
        if rtype is None:
            out.rejects.append(Reject(display, unit.location, None, "unknown record type"))
            continue
        data = dict(obj, type=rtype)
        if rtype != "profile":
            data.setdefault("id", f"{path.stem}-{unit.tag[1:]}")
        if rtype in ("dialogue", "preference") and character and "character" not in data:
            data["character"] = character
        data["source"] = data.get("source") or f"{display}{unit.tag}"
        record = build(MODELS[rtype], data)
        if isinstance(record, str):
            out.rejects.append(Reject(display, unit.location, rtype, record))
        else:
            out.records.append((record, unit.location))
    return out
