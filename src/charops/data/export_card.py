"""``charops data export-card``: a character profile from any input charops reads, as a card file.

The use case on top of two layers: the importers (:mod:`charops.data.importers`) read the
inputs, the codec (:mod:`charops.data.cards`) writes the card::

    from charops.data.export_card import export_card
    export_card(["characters.jsonl"], name="Mara", version="v3", image="mara.png", out="mara.png")
    charops data export-card characters.jsonl --name Mara --format v3 --png mara.png
"""

from __future__ import annotations

import re
from pathlib import Path

from charops.data.cards import profile_to_card, write_card
from charops.data.importers import load_inputs
from charops.errors import DataError
from charops.io import check_output


def export_card(inputs: list[str], *, version: str = "v3", name: str | None = None,
                out: str | None = None, image: str | None = None, overwrite: bool = False) -> Path:
    """Write the profile ``name`` (the only one, when ``inputs`` hold one) as a card file.

    ``inputs`` are any files charops reads (native profiles, CharacterGLM cards, character
    cards...). ``out`` defaults to ``<name>.<version>.png`` with ``image`` and
    ``<name>.<version>.json`` without; an existing ``out`` is refused unless ``overwrite``, and
    ``out`` may never be one of the inputs or the image.
    """
    if version not in ("v2", "v3"):
        raise DataError(f"card format '{version}': use v2 or v3")
    profiles = load_inputs(inputs).profiles
    if not profiles:
        raise DataError(f"{', '.join(inputs)}: no character profile in these inputs")
    names = [p.name for p in profiles]
    if name is not None:
        if name not in names:
            raise DataError(f"no profile named '{name}' in {', '.join(inputs)} (have: {', '.join(names)})")
        profile = profiles[names.index(name)]
    elif len(profiles) > 1:
        raise DataError(f"{', '.join(inputs)} hold {len(profiles)} profiles ({', '.join(names)}): "
                        "choose one with --name")
    else:
        profile = profiles[0]
    stem = re.sub(r"[^\w.-]+", "_", profile.name).strip("._") or "character"
    target = Path(out) if out else Path(f"{stem}.{version}.{'png' if image else 'json'}")
    if image and target.suffix.lower() != ".png":
        raise DataError(f"--png embeds the card in an image: the output '{target}' must end in .png")
    sources = [("the input", src) for src in inputs] + ([("the image", image)] if image else [])
    check_output(target, inputs=sources, overwrite=overwrite, option="--out", directory=False,
                 error=DataError)
    return write_card(profile_to_card(profile, version), target, Path(image) if image else None)
