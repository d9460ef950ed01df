"""Character cards (TavernAI / SillyTavern V1, V2, V3) as an input format (``tavern-card``).

A ``.png`` (card in a ``ccv3``/``chara`` tEXt chunk), a ``.charx`` zip (``card.json``) or a
``.json`` file holding one card or a JSON array of cards. Each card is one unit: a profile, or
a reject saying why not (bad base64, bad PNG, a chunk that is not JSON, a wrong ``spec``, a
field of the wrong type). Each ``<START>`` block of its ``mes_example`` is one more unit: an
example dialogue of the character, or a reject. The mapping is in :mod:`charops.data.cards`::

    from pathlib import Path
    from charops.data.importers import cards
    parsed = cards.parse(Path("mara.png"), "mara.png")
"""

from __future__ import annotations

from pathlib import Path

from charops.data.cards import CardError, card_records, read_card_file
from charops.data.importers.common import FileRejected, Parsed, Reject


def _add(out: Parsed, card: object, display: str, location: str, tag: str, card_id: str) -> None:
    try:
        profile, examples, bad = card_records(card, card_id=card_id, source=f"{display}{tag}")
    except CardError as exc:
        out.rejects.append(Reject(display, location, "profile", str(exc)))
        return
    out.records.append((profile, location))
    for dialogue in examples:
        out.records.append((dialogue, f"{location}, mes_example block {dialogue.meta['block']}"))
    for reason in bad:
        block, _, why = reason.partition(": ")
        out.rejects.append(Reject(display, f"{location}, {block}", "dialogue", why))


def parse(path: Path, display: str, character: str | None = None) -> Parsed:
    try:
        value = read_card_file(path)
    except CardError as exc:
        raise FileRejected(str(exc)) from None
    out = Parsed()
    if isinstance(value, list):  # a JSON array of cards
        for i, card in enumerate(value):
            _add(out, card, display, f"index {i}", f"#{i}", f"{path.stem}-{i}")
    else:
        _add(out, value, display, "card", "", path.stem)
    return out
