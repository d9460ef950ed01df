"""CharacterGLM character cards (``basic_demo/character.json`` of CharacterGLM-6B).

One JSON object keyed by character name; each card is
``{"user_info", "bot_info", "user_name", "bot_name", "greeting"}``. ``bot_info`` is the
character's free-text profile and becomes ``identity``; ``greeting`` is kept as the greeting;
the name is ``bot_name`` (the key when ``bot_name`` is empty). ``user_info`` and ``user_name``
describe the user's side of the role-play and go to ``extra`` with any other field (and the
card's key, when it differs from ``bot_name``)::

    from pathlib import Path
    from charops.data.importers import characterglm
    parsed = characterglm.parse(Path("character.json"), "character.json")
"""

from __future__ import annotations

from pathlib import Path

from charops.data.importers.common import (
    FileRejected,
    Parsed,
    Reject,
    as_text,
    build,
    json_document,
)
from charops.data.schema import CharacterProfile

CARD_KEYS = ("user_info", "bot_info", "user_name", "bot_name", "greeting")


def parse(path: Path, display: str, character: str | None = None) -> Parsed:
    data = json_document(path)
    if not isinstance(data, dict):
        raise FileRejected("not a JSON object keyed by character name (CharacterGLM cards)")
    out = Parsed()
    for key, card in data.items():
        loc = f"key '{key}'"
        if not isinstance(card, dict):
            out.rejects.append(Reject(display, loc, "profile", "card must be a JSON object"))
            continue
        name = as_text(card.get("bot_name")).strip() or str(key).strip()
        # user_* and unknown fields are the user's side or unmodelled: kept, never dropped.
        extra = {k: v for k, v in card.items()
                 if k not in ("bot_info", "bot_name", "greeting") and v not in (None, "")}
        if str(key).strip() != name:
            extra["card_key"] = key
        fields = {"name": name, "identity": as_text(card.get("bot_info")),
                  "greeting": as_text(card.get("greeting")), "source": f"{display}#{key}"}
        if extra:
            fields["extra"] = extra
        record = build(CharacterProfile, fields)
        if isinstance(record, str):
            out.rejects.append(Reject(display, loc, "profile", record))
        else:
            out.records.append((record, loc))
    return out
