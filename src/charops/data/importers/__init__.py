"""Importers: each source format to charops records (see docs/data-format.md).

``load_inputs`` reads files and directories (every ``.jsonl``/``.json``/``.txt`` inside,
sorted, recursive, hidden names skipped), detects each file's format unless one is given, and
returns accepted records plus a reject for every unit that did not make it::

    from charops.data.importers import load_inputs
    result = load_inputs(["data/", "extra/chats.jsonl"], character="林小满")
    result.summary()    # read == accepted + rejected, per reason, per type, per file

or from the shell: ``charops data validate data/ --rejects rejects.jsonl``.

Formats: ``native`` (charops JSONL), ``messages`` (OpenAI), ``sharegpt``, ``charactereval``
(test data), ``charactereval-profiles``, ``characterglm`` (character cards), ``tavern-card``
(TavernAI/SillyTavern character cards V1-V3: JSON, PNG, CHARX), ``text``, ``trl`` (TRL
conversational DPO/KTO rows, as ``charops feedback export`` writes them), ``sillytavern-chat``
(SillyTavern's saved chats, swipes kept).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from charops.data.cards import is_card
from charops.data.importers import (
    cards,
    charactereval,
    characterglm,
    messages,
    native,
    sillytavern,
    text,
    trl,
)
from charops.data.importers.common import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_RECORD_BYTES,
    TOO_DEEP,
    FileRejected,
    LoadResult,
    Parsed,
    Reject,
    SourceFile,
    is_rejects_file,
    read_text,
)
from charops.errors import DataError
from charops.io import sha256_file

__all__ = ["FORMATS", "EXTENSIONS", "LoadResult", "Reject", "SourceFile", "detect_format", "load_inputs"]

# Format name -> parser(path, display name, character) -> Parsed.
PARSERS: dict[str, Callable[..., Parsed]] = {
    "native": native.parse,
    "messages": messages.parse_messages,
    "sharegpt": messages.parse_sharegpt,
    "charactereval": charactereval.parse_contexts,
    "charactereval-profiles": charactereval.parse_profiles,
    "characterglm": characterglm.parse,
    "tavern-card": cards.parse,
    "text": text.parse,
    "trl": trl.parse,  # TRL conversational DPO/KTO rows (charops feedback export)
    sillytavern.FORMAT: sillytavern.parse,  # SillyTavern's saved chats (swipes kept)
}
FORMATS: tuple[str, ...] = tuple(PARSERS)
EXTENSIONS = (".jsonl", ".json", ".txt", ".png", ".charx")
_SCAN_LINES = 50  # how many lines format detection may look at for a parseable object
# Keys that make a JSON object one record rather than an object keyed by character name.
_RECORD_KEYS = {"type", "turns", "chosen", "rejected", "text", "messages", "conversations", "context", "prompt"}


def _classify_item(obj: dict) -> str:
    """The format a single JSON record belongs to, from its keys."""
    if is_card(obj):
        return "tavern-card"
    if sillytavern.is_header(obj) or sillytavern.is_message(obj):
        return sillytavern.FORMAT
    if "context" in obj and "role" in obj:
        return "charactereval"
    if trl.is_trl(obj):
        return "trl"
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "text" in obj and "type" not in obj and not {"turns", "chosen", "rejected"} & obj.keys():
        return "text"
    return "native"


def detect_format(path: Path) -> str:
    """A file's format from its extension and content; FileRejected when it cannot be told."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "text"
    if suffix in (".png", ".charx"):
        return "tavern-card"
    if suffix not in (".json", ".jsonl"):
        raise FileRejected(f"unsupported file type '{suffix or path.name}' (use .jsonl, .json, .txt, .png or .charx, or pass --format)")
    content = read_text(path)
    try:
        whole = json.loads(content)
    except json.JSONDecodeError:
        whole = None
    except RecursionError:
        raise FileRejected(TOO_DEEP) from None
    if isinstance(whole, list):
        first = next((v for v in whole if isinstance(v, dict)), None)
        return _classify_item(first) if first is not None else "native"
    if isinstance(whole, dict):
        if is_card(whole):
            return "tavern-card"
        if _RECORD_KEYS & whole.keys() or isinstance(whole.get("name"), str):
            return _classify_item(whole)  # one record alone in the file
        # Objects keyed by character name; one card or profile is enough to tell, and a bad
        # entry then becomes a reject of its key.
        cards = [v for v in whole.values() if isinstance(v, dict)]
        if any("bot_info" in v for v in cards):
            return "characterglm"
        if any(v.keys() & charactereval.PROFILE_KEYS.keys() for v in cards) or (
                whole and all(isinstance(v, str) for v in whole.values())):
            return "charactereval-profiles"
        if suffix == ".jsonl" or "\n" not in content.strip():
            return _classify_item(whole)  # a JSONL file of one line
        raise FileRejected("cannot detect the format of this JSON object; pass --format "
                           "(characterglm or charactereval-profiles for objects keyed by name)")
    for line in content.split("\n")[:_SCAN_LINES]:
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(obj, dict):
            return _classify_item(obj)
    return "native"


def _expand(paths: Sequence[str | Path], skipped: list[dict[str, str]]) -> list[tuple[Path, str]]:
    """(file, display name) for every input file, in a deterministic order, each once.

    Under a directory, rejects files that charops wrote there are left out (listed in
    ``skipped``); a file named on its own is always read.
    """
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise DataError(f"{p}: no such file or directory")
        if path.is_dir():
            files = sorted(q for q in path.rglob("*") if q.is_file() and q.suffix.lower() in EXTENSIONS
                           and not any(part.startswith(".") for part in q.relative_to(path).parts))
            if not files:
                raise DataError(f"{p}: no .jsonl, .json or .txt file in this directory")
            for f in [f for f in files if f.suffix.lower() == ".jsonl" and is_rejects_file(f)]:
                files.remove(f)
                skipped.append({"path": str(f), "reason": "a charops rejects file"})
        else:
            files = [path]
        for f in files:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                out.append((f, str(f)))
    return out


def load_inputs(paths: Sequence[str | Path], fmt: str = "auto", character: str | None = None,
                max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> LoadResult:
    """Read every input into records and rejects (nothing is dropped silently).

    ``fmt`` applies to every file (``auto``: detected per file). ``character`` names the
    character of chat records that do not say (messages/ShareGPT, native dialogues).
    A missing path is an error; an unreadable or unparseable file is a reject; so is a unit
    (a JSONL line, an array element, a paragraph) over ``max_record_bytes``, left unparsed.
    """
    token = MAX_RECORD_BYTES.set(max_record_bytes)
    try:
        return _load(paths, fmt, character)
    finally:
        MAX_RECORD_BYTES.reset(token)


def _load(paths: Sequence[str | Path], fmt: str, character: str | None) -> LoadResult:
    if fmt != "auto" and fmt not in PARSERS:
        raise DataError(f"unknown format '{fmt}' (choose from auto, {', '.join(FORMATS)})")
    if not paths:
        raise DataError("no input paths given")
    result = LoadResult()
    for path, display in _expand(paths, result.skipped):
        src = SourceFile(path=display, sha256=sha256_file(path), format=fmt)
        try:
            src.format = detect_format(path) if fmt == "auto" else fmt
            parsed = PARSERS[src.format](path, display, character=character)
        except FileRejected as exc:
            if src.format == "auto":
                src.format = "unknown"
            parsed = Parsed(rejects=[Reject(display, "file", None, exc.reason)])
        for record, location in parsed.records:
            result.add(record, display, location)
        result.rejects.extend(parsed.rejects)
        src.accepted, src.rejected = len(parsed.records), len(parsed.rejects)
        src.read = src.accepted + src.rejected
        result.sources.append(src)
    return result
