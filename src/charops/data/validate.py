"""Cross-record checks and the rejects file.

:func:`check_references` runs after :func:`charops.data.normalize.normalize`:

- a profile name must be unique: a later profile with the same name but other content is
  rejected (``duplicate profile name``); exact duplicates were already dropped;
- a dialogue, preference pair or document id must be unique per type: a later record with the
  same id but other content is rejected (``duplicate id``) -- splits key on ids;
- a training dialogue (not an evaluation prompt) with no assistant turn is rejected
  (``no assistant turn to learn from``): no token of it would be supervised;
- a dialogue or pair naming a character with no profile is *kept* (the model still learns the
  voice, and the system prompt then only names the character); such names are listed as
  ``characters_without_profile`` in the summary so the user can add profiles.

:func:`load_and_check` is the whole front half of ``data validate`` and ``data prepare``::

    from charops.data.validate import load_and_check, write_rejects
    result, dropped = load_and_check(["data/"])
    write_rejects("rejects.jsonl", result.rejects)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from charops.data.importers import LoadResult, Reject, load_inputs
from charops.data.importers.common import DEFAULT_MAX_RECORD_BYTES
from charops.data.normalize import normalize
from charops.data.schema import Record
from charops.errors import DataError
from charops.io import check_output, file_in_the_way, write_jsonl

NO_REPLY = "no assistant turn to learn from"


def check_references(result: LoadResult) -> LoadResult:
    """Reject clashing names and ids; list the characters that have no profile."""
    profile_names: set[str] = set()
    ids: set[tuple[str, str]] = set()

    def keep(record: Record) -> Record | str:
        if record.type == "dialogue" and not record.is_eval_prompt and record.n_assistant_turns == 0:
            return NO_REPLY
        if record.type == "profile":
            if record.name in profile_names:
                return "duplicate profile name"
            profile_names.add(record.name)
            return record
        if (record.type, record.id) in ids:
            return "duplicate id"
        ids.add((record.type, record.id))
        return record

    out = result.derive(keep)
    named = {r.character for r in (*out.dialogues, *out.preferences)}
    out.characters_without_profile = sorted(named - profile_names)
    return out


def load_and_check(paths: Sequence[str | Path], fmt: str = "auto", character: str | None = None,
                   max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> tuple[LoadResult, dict[str, int]]:
    """Import, normalise, drop exact duplicates, check references; also duplicates per type."""
    result, dropped = normalize(load_inputs(paths, fmt=fmt, character=character,
                                            max_record_bytes=max_record_bytes))
    return check_references(result), dropped


def check_rejects_path(path: str | os.PathLike, result: LoadResult | None = None) -> Path:
    """Where ``--rejects`` may write: not a directory, not under a file, not any input read.

    Called before loading (``result`` None: the shape of the path) and again with the load
    result (the files actually read), so that an input is never overwritten by its rejects.
    """
    target = Path(path)
    if target.is_dir():
        raise DataError(f"--rejects {path}: is a directory; name a file such as {target / 'rejects.jsonl'}")
    if (blocker := file_in_the_way(target)) is not None:
        raise DataError(f"--rejects {path}: '{blocker}' is a file, not a folder; choose another path")
    if result is not None:  # the rejects file is replaced freely, but never over an input
        check_output(target, inputs=[("an input", src.path) for src in result.sources], overwrite=True,
                     option="--rejects", directory=False, error=DataError)
    return target


def write_rejects(path: str | os.PathLike, rejects: Iterable[Reject]) -> int:
    """Rejects as JSONL (source, location, record_type, reason), written atomically.

    Such a file is recognised by its fields and never read back as input from a folder.
    """
    check_rejects_path(path)
    try:
        return write_jsonl(path, (dataclasses.asdict(r) for r in rejects))
    except OSError as exc:
        raise DataError(f"--rejects {path}: cannot write ({exc.strerror})") from None
