"""The characters a served model plays, from ``<model_dir>/characters.jsonl``.

Training copies the dataset's CharacterProfile records into the model directory, so the
profiles travel with the weights; the server renders each one into the same system prompt the
model was trained with (``charops.data.render``). A request names a character by the
``model`` field (``charops-chat:林小满``) or by an extra ``character`` body field::

    from charops.serve.characters import load_characters
    chars = load_characters("runs/dpo/model")
    chars["林小满"].system_prompt
    chars["林小满"].trained          # False: training rejected all of its data

``trained_characters.json`` (written by the training stages next to ``characters.jsonl``) lists
the characters the model's training rows covered; a profile not in it is *untrained* (its data
was all rejected, e.g. dialogues longer than ``max_seq_len``). Without the file (models from an
older charops, or a plain directory) every profile counts as trained.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pydantic import ValidationError

from charops.data.render import render_system_prompt
from charops.data.schema import CharacterProfile
from charops.errors import CharopsError

CHARACTERS_FILE = "characters.jsonl"
TRAINED_FILE = "trained_characters.json"


@dataclasses.dataclass(frozen=True)
class Character:
    profile: CharacterProfile
    system_prompt: str
    trained: bool = True

    @property
    def name(self) -> str:
        return self.profile.name


def trained_names(model_dir: str | Path) -> set[str] | None:
    """The characters the model was trained on (``trained_characters.json``), None when unknown."""
    path = Path(model_dir) / TRAINED_FILE
    if not path.is_file():
        return None
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["trained"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CharopsError(f"{path}: not a trained-characters record ({exc}); expected "
                           '{"trained": [NAME, ...]}') from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CharopsError(f"{path}: 'trained' must be a list of character names")
    return set(names)


def load_characters(model_dir: str | Path) -> dict[str, Character]:
    """Name -> Character for every profile in ``<model_dir>/characters.jsonl`` ({} when absent)."""
    path = Path(model_dir) / CHARACTERS_FILE
    if not path.is_file():
        return {}
    trained = trained_names(model_dir)
    out: dict[str, Character] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            profile = CharacterProfile.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValidationError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CharopsError(f"{path}:{lineno}: not a character profile ({first}); fix or remove "
                               "the line (it comes from the dataset's characters.jsonl)") from None
        if profile.name in out:
            raise CharopsError(f"{path}:{lineno}: character '{profile.name}' appears twice")
        out[profile.name] = Character(profile, render_system_prompt(profile),
                                      trained=trained is None or profile.name in trained)
    return out
