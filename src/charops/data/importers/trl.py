"""TRL's conversational preference formats, as ``charops feedback export`` writes them.

- DPO: ``{"prompt": [messages], "chosen": [{"role": "assistant", ...}], "rejected": [...]}``
  -> a :class:`~charops.data.schema.PreferencePair` whose context is the prompt as given
  (a system message in it stays the pair's own system turn, so the rendered prompt is kept);
- KTO: ``{"prompt": [messages], "completion": [{"role": "assistant", ...}], "label": bool}``
  -> a label-true row is a :class:`~charops.data.schema.Dialogue` (prompt + completion, SFT
  data); a label-false row has no record type to go to and is a reject saying so (train it
  with ``charops train kto dataset=EXPORT_DIR``).

``character`` comes from the row, else the ``--character`` option; ``id``, ``topic`` and
``source`` are kept, ``conversation`` goes to ``meta``::

    from pathlib import Path
    from charops.data.importers import trl
    parsed = trl.parse(Path("fb/dpo/train.jsonl"), "fb/dpo/train.jsonl")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charops.data.importers.common import Parsed, Reject, build, json_objects
from charops.data.schema import Dialogue, PreferencePair

KTO_NEGATIVE = "KTO row with label false: no SFT or DPO record holds it (train it with charops train kto)"


def is_trl(obj: dict) -> bool:
    """A TRL conversational DPO or KTO row (the prompt is a list of messages)."""
    return isinstance(obj.get("prompt"), list) and (
        isinstance(obj.get("chosen"), list) or ("completion" in obj and "label" in obj))


def _reply(value: Any, key: str) -> str:
    if (not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict)
            or value[0].get("role") != "assistant" or not isinstance(value[0].get("content"), str)):
        raise ValueError(f"{key}: expected one assistant message [{{'role': 'assistant', 'content': ...}}]")
    return value[0]["content"]


def parse(path: Path, display: str, character: str | None = None) -> Parsed:
    out = Parsed()
    for unit in json_objects(path, display, None, out):
        obj = unit.value
        kto = "completion" in obj
        rtype = "dialogue" if kto else "preference"
        if not is_trl(obj):
            out.rejects.append(Reject(display, unit.location, rtype,
                                      "not a TRL row: prompt (messages) with chosen/rejected or completion/label"))
            continue
        who = obj.get("character") or character
        if not who:
            out.rejects.append(Reject(display, unit.location, rtype,
                                      "no character: add a 'character' field or pass --character NAME"))
            continue
        base = {"id": str(obj.get("id") or f"{path.stem}-{unit.tag[1:]}"), "character": who,
                "source": obj.get("source") or f"{display}{unit.tag}",
                "meta": {"conversation": obj["conversation"]} if obj.get("conversation") else {}}
        if obj.get("topic"):
            base["topic"] = obj["topic"]
        try:
            if kto:
                if obj.get("label") is not True:
                    if obj.get("label") is False:
                        out.rejects.append(Reject(display, unit.location, rtype, KTO_NEGATIVE))
                        continue
                    raise ValueError("label: expected true or false")
                data = {**base, "turns": [*obj["prompt"], {"role": "assistant",
                                                           "content": _reply(obj["completion"], "completion")}]}
            else:
                data = {**base, "context": obj["prompt"], "chosen": _reply(obj["chosen"], "chosen"),
                        "rejected": _reply(obj.get("rejected"), "rejected")}
        except ValueError as exc:
            out.rejects.append(Reject(display, unit.location, rtype, str(exc)))
            continue
        record = build(Dialogue if kto else PreferencePair, data)
        if isinstance(record, str):
            out.rejects.append(Reject(display, unit.location, rtype, record))
        else:
            out.records.append((record, unit.location))
    return out
