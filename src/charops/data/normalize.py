"""Whitespace/unicode normalisation, exact-duplicate dropping and deterministic splits.

- :func:`normalize_text`: NFC, ``\\r\\n``/``\\r`` -> ``\\n``, runs of spaces and tabs -> one space,
  lines stripped, three or more newlines -> two, ends stripped. NFC (not NFKC) keeps full-width
  punctuation (``，。！？（）：``) and the ideographic space as they are: in Chinese role-play
  text they are the norm, and stage directions like ``（好奇）`` are part of the reply.
- :func:`normalize`: applies it to every text field of every record, then drops exact
  duplicates per record type (first occurrence wins). Dialogues and preference pairs are
  compared by content (character, topic, turns, eval-prompt flag), not by id or source; a dropped
  duplicate becomes a reject ``exact duplicate`` at its file and location, so
  ``read = accepted + rejected`` still holds.
- :func:`split_dialogues`: train/validation by a stable hash of the id, or holding out whole
  characters (a fixed list or a fraction of them). Works for dialogues and preference pairs::

    from charops.data.importers import load_inputs
    from charops.data.normalize import normalize, split_dialogues
    result, dropped = normalize(load_inputs(["data/"]))
    train, val = split_dialogues(result.dialogues, 0.1, seed=0)
    train, val = split_dialogues(result.dialogues, 0.0, by="character", holdout_characters=["林小满"])
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from typing import Literal, TypeVar

from charops.data.importers.common import RECORD_TYPES, LoadResult
from charops.data.schema import (
    CharacterProfile,
    CorpusDocument,
    Dialogue,
    PreferencePair,
    Record,
    Turn,
)
from charops.errors import DataError
from charops.io import dumps_json

DUPLICATE_REASON = "exact duplicate"
SAME_REPLIES = "chosen and rejected are the same text"  # as the schema says before normalising

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")  # not \u3000: the ideographic space is deliberate text
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    lines = [_SPACES.sub(" ", line).strip(" ") for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")


def _turns(turns: list[Turn]) -> list[Turn]:
    return [t.model_copy(update={"content": normalize_text(t.content),
                                 "name": normalize_text(t.name) if t.name is not None else None})
            for t in turns]


def normalize_record(record: Record) -> Record:
    """A copy of ``record`` with every text field normalised (meta/extra untouched)."""
    if isinstance(record, CharacterProfile):
        update = {}
        for name, value in record:
            if name in ("type", "category", "language", "source", "extra"):
                continue
            if isinstance(value, str):
                update[name] = normalize_text(value)
            elif isinstance(value, list):
                update[name] = [s for s in (normalize_text(v) for v in value) if s]
        return record.model_copy(update=update)
    if isinstance(record, Dialogue):
        return record.model_copy(update={"character": normalize_text(record.character),
                                         "turns": _turns(record.turns)})
    if isinstance(record, PreferencePair):
        return record.model_copy(update={"character": normalize_text(record.character),
                                         "context": _turns(record.context),
                                         "chosen": normalize_text(record.chosen),
                                         "rejected": normalize_text(record.rejected)})
    assert isinstance(record, CorpusDocument)
    return record.model_copy(update={"text": normalize_text(record.text)})


def content_key(record: Record) -> str:
    """What makes two records the same content: everything but id, source and free meta."""
    if isinstance(record, CharacterProfile):
        data = record.model_dump(exclude={"source"})
    elif isinstance(record, Dialogue):
        data = {"character": record.character, "topic": record.topic, "eval": record.is_eval_prompt,
                "turns": [t.model_dump() for t in record.turns]}
    elif isinstance(record, PreferencePair):
        data = {"character": record.character, "topic": record.topic, "chosen": record.chosen,
                "rejected": record.rejected, "context": [t.model_dump() for t in record.context]}
    else:
        data = {"text": record.text}
    return hashlib.sha256(dumps_json(data).encode()).hexdigest()


def normalize(result: LoadResult) -> tuple[LoadResult, dict[str, int]]:
    """Normalised records with exact duplicates dropped; also the number dropped per type."""
    seen: set[tuple[str, str]] = set()
    dropped = dict.fromkeys(RECORD_TYPES, 0)

    def keep(record: Record) -> Record | str:
        record = normalize_record(record)
        if isinstance(record, PreferencePair) and record.chosen == record.rejected:
            return SAME_REPLIES  # a pair that differs only in spacing or Unicode form teaches nothing
        key = (record.type, content_key(record))
        if key in seen:
            dropped[record.type] += 1
            return DUPLICATE_REASON
        seen.add(key)
        return record

    return result.derive(keep), dropped


# --- splits ------------------------------------------------------------------------------------

T = TypeVar("T")  # Dialogue, PreferencePair or anything with .id (and .character)


def stable_fraction(key: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by ``key`` and ``seed`` (same on every machine and run)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def holdout_for(characters: Sequence[str], fraction: float, seed: int = 0) -> list[str]:
    """Which characters a character-level split holds out: the ``round(fraction * n)`` with the
    smallest stable hash, at least one when ``fraction > 0``, never all of them."""
    names = sorted(set(characters))
    if fraction <= 0 or len(names) < 2:
        return []
    k = min(max(1, round(fraction * len(names))), len(names) - 1)
    return sorted(sorted(names, key=lambda n: stable_fraction(n, seed))[:k])


def split_dialogues(items: Sequence[T], validation_fraction: float, seed: int = 0,
                    by: Literal["dialogue", "character"] = "dialogue",
                    holdout_characters: list[str] | None = None) -> tuple[list[T], list[T]]:
    """(train, validation), each in input order.

    ``by="dialogue"``: an item goes to validation when the stable hash of its id falls under
    ``validation_fraction`` -- adding or removing other items never moves it.
    ``by="character"``: every item of a held-out character goes to validation; held out are
    ``holdout_characters`` when given, else a ``validation_fraction`` of the characters.
    """
    if not 0 <= validation_fraction < 1:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if by == "dialogue":
        if holdout_characters:
            raise DataError("holdout_characters needs by='character'")
        val_mask = [stable_fraction(it.id, seed) < validation_fraction for it in items]
    elif by == "character":
        held = set(holdout_characters) if holdout_characters is not None else set(
            holdout_for([it.character for it in items], validation_fraction, seed))
        val_mask = [it.character in held for it in items]
    else:
        raise DataError(f"split by '{by}': expected 'dialogue' or 'character'")
    train = [it for it, v in zip(items, val_mask, strict=True) if not v]
    val = [it for it, v in zip(items, val_mask, strict=True) if v]
    return train, val
