"""What every importer shares: the load result, rejects, and reading JSON/JSONL/text files.

Importers never raise on bad data. Each *unit* of a file (a JSONL line, a JSON array element,
a key of a JSON object, a paragraph of a text file) becomes either one record or one
:class:`Reject` with a short, stable reason, so that ``read = accepted + rejected`` holds per
file and in total. A file that cannot be read at all is one reject (location ``"file"``)::

    from charops.data.importers import load_inputs
    result = load_inputs(["data/"])
    print(result.summary())
"""

from __future__ import annotations

import contextvars
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from charops.data.schema import CharacterProfile, CorpusDocument, Dialogue, PreferencePair, Record

RECORD_TYPES = ("profile", "dialogue", "preference", "document")


@dataclass
class Reject:
    """One unit of input that did not become a record, and why."""

    source: str  # the file, as the user named it (or as found under a directory they named)
    location: str  # "line 12", "index 3", "key '林小满'", "paragraph 2 (line 7)" or "file"
    record_type: str | None  # what it would have been, when that is known
    reason: str  # short and stable, so that summaries can count per reason


REJECT_FIELDS = ("source", "location", "record_type", "reason")


def is_rejects_file(path: Path) -> bool:
    """Whether ``path`` is a rejects file charops wrote (its first record has exactly the
    fields of a :class:`Reject`), so that one written into an input folder is not read back."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    for line in head.split(b"\n"):
        if line.strip():
            try:
                first = json.loads(line)
            except (ValueError, RecursionError):
                return False
            return isinstance(first, dict) and sorted(first) == sorted(REJECT_FIELDS)
    return False


@dataclass
class SourceFile:
    """One input file and what became of its units."""

    path: str
    sha256: str
    format: str
    read: int = 0
    accepted: int = 0
    rejected: int = 0


@dataclass
class Parsed:
    """What an importer made of one file, in file order: (record, location) pairs and rejects."""

    records: list[tuple[Record, str]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


class FileRejected(Exception):
    """Raised by an importer when a whole file is unusable; becomes one reject for the file."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class LoadResult:
    """Accepted records by type, every reject, and the files they came from."""

    profiles: list[CharacterProfile] = field(default_factory=list)
    dialogues: list[Dialogue] = field(default_factory=list)
    preferences: list[PreferencePair] = field(default_factory=list)
    documents: list[CorpusDocument] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    sources: list[SourceFile] = field(default_factory=list)
    # Set by charops.data.validate.check_references; None until references were checked.
    characters_without_profile: list[str] | None = None
    # Files found under an input directory and not read, e.g. a rejects file charops wrote
    # there: {"path", "reason"} each (they are not sources: nothing was read from them).
    skipped: list[dict[str, str]] = field(default_factory=list)
    # id(record) -> (file, location). Records are shared, not copied, between results, and
    # every result maps only the records it holds, so the ids stay valid.
    origins: dict[int, tuple[str, str]] = field(default_factory=dict, repr=False)

    def records(self) -> Iterator[Record]:
        """Every accepted record: profiles, dialogues, preferences, documents, each in order."""
        yield from self.profiles
        yield from self.dialogues
        yield from self.preferences
        yield from self.documents

    def origin(self, record: Record) -> tuple[str, str]:
        """(file, location) a record was read from."""
        return self.origins[id(record)]

    def add(self, record: Record, source: str, location: str) -> None:
        getattr(self, _LIST_OF[record.type]).append(record)
        self.origins[id(record)] = (source, location)

    def derive(self, keep: Callable[[Record], Record | str]) -> LoadResult:
        """A new result: ``keep(record)`` returns the record to keep (itself or a changed copy)
        or a reason string, which turns the record into a reject of its file and location.

        Records are visited in :meth:`records` order, so stateful ``keep`` functions (dedupe:
        first occurrence wins) are deterministic. Per-file counts follow the rejects.
        """
        out = LoadResult(rejects=list(self.rejects), sources=[replace(s) for s in self.sources],
                         characters_without_profile=self.characters_without_profile,
                         skipped=list(self.skipped))
        by_path = {s.path: s for s in out.sources}
        for record in self.records():
            src, loc = self.origin(record)
            kept = keep(record)
            if isinstance(kept, str):
                out.rejects.append(Reject(src, loc, record.type, kept))
                by_path[src].accepted -= 1
                by_path[src].rejected += 1
            else:
                out.add(kept, src, loc)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for people and manifests; ``read == accepted + rejected``."""
        accepted_by_type = {t: len(getattr(self, _LIST_OF[t])) for t in RECORD_TYPES}
        out: dict[str, Any] = {
            "read": sum(s.read for s in self.sources),
            "accepted": sum(accepted_by_type.values()),
            "rejected": len(self.rejects),
            "accepted_by_type": accepted_by_type,
            "rejected_by_type": dict(sorted(Counter(r.record_type or "unknown" for r in self.rejects).items())),
            "rejected_by_reason": dict(sorted(Counter(r.reason for r in self.rejects).items(),
                                              key=lambda kv: (-kv[1], kv[0]))),
            "eval_prompts": sum(d.is_eval_prompt for d in self.dialogues),
            "characters": sorted({p.name for p in self.profiles}),
            "sources": [vars(s).copy() for s in self.sources],
            "skipped_files": [dict(s) for s in self.skipped],
        }
        if self.characters_without_profile is not None:
            out["characters_without_profile"] = list(self.characters_without_profile)
        return out


_LIST_OF = {"profile": "profiles", "dialogue": "dialogues", "preference": "preferences", "document": "documents"}


# --- turning pydantic errors into one-line reasons ---------------------------------------------


def error_reason(exc: ValidationError, rename: dict[str, str] | None = None) -> str:
    """``turns[2].content: content is blank`` -- one line, stable across records.

    ``rename`` maps a schema field to the name the user's file calls it (``turns`` ->
    ``messages``), so the reason points at something the user can find.
    """
    parts = []
    for err in exc.errors(include_url=False):
        loc = ""
        for i, item in enumerate(err["loc"]):
            if isinstance(item, int):
                loc += f"[{item}]"
            else:
                item = (rename or {}).get(item, item) if i == 0 else item
                loc += f".{item}" if loc else item
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def build(model: type[BaseModel], data: dict, rename: dict[str, str] | None = None) -> BaseModel | str:
    """Validate ``data`` as ``model``; the record, or a one-line reason."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return error_reason(exc, rename)


# --- reading files -----------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """The file's text with newlines normalised; a whole-file reject if it is not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FileRejected(f"cannot read file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)  # offsets count the BOM
        line = raw.count(b"\n", 0, start) + 1
        raise FileRejected(f"not UTF-8 text (first bad byte 0x{raw[start]:02x} at byte {start}, line {line})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass
class Unit:
    """One JSON value of a JSONL line or a JSON array element (or why it is not JSON)."""

    location: str  # "line 3" / "index 0"
    tag: str  # appended to the file name for a record's ``source``: ":3" / "#0"
    value: Any = None
    error: str | None = None


TOO_DEEP = "invalid JSON (nested too deeply)"
# Records larger than this are rejected unread: a 50 MB line otherwise costs a minute and
# gigabytes before it is found too long. load_inputs sets it (max_record_bytes).
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES: contextvars.ContextVar[int] = contextvars.ContextVar("max_record_bytes",
                                                                     default=DEFAULT_MAX_RECORD_BYTES)


def too_big(text: str) -> str | None:
    """The reject reason for a unit over the byte limit, else None (cheap for small units)."""
    limit = MAX_RECORD_BYTES.get()
    if len(text) * 4 <= limit or len(text.encode("utf-8", "surrogatepass")) <= limit:
        return None
    return f"record over max_record_bytes ({limit} bytes)"


def surrogate_at(value: Any, path: str = "") -> str | None:
    """The key path of the first string holding a lone surrogate (``"\\ud800"`` in JSON is
    valid syntax but not Unicode text: it cannot be written out as UTF-8), else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "value"
        return None
    if isinstance(value, dict):
        for key, v in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if (found := surrogate_at(key, sub) or surrogate_at(v, sub)) is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if (found := surrogate_at(v, f"{path}[{i}]")) is not None:
                return found
    return None


def loads_checked(text: str) -> tuple[Any, str | None]:
    """``json.loads`` that turns the failures of valid-looking JSON into a reason: nesting too
    deep for the parser, or a lone surrogate somewhere in the value."""
    try:
        value = json.loads(text)
    except RecursionError:
        return None, TOO_DEEP
    try:
        orjson.dumps(value)  # the fast check; the walk below only runs on a bad value
    except (TypeError, orjson.JSONEncodeError):
        where = surrogate_at(value)
        if where is not None:
            return None, f"{where}: lone surrogate in the text (not valid Unicode); remove or fix that character"
    return value, None


def json_units(path: Path) -> list[Unit]:
    """The units of a JSONL file, or of a JSON array file (whatever its extension).

    A file whose text is one JSON array is read as an array, one JSON object (even spread over
    lines) as one unit; anything else line by line. Blank lines are not units.
    """
    text = read_text(path)
    if text.lstrip().startswith(("[", "{")):
        try:
            whole = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            whole = None  # JSONL of several lines: read line by line below
        big = too_big(text) is not None  # only then can one element be over the limit
        if isinstance(whole, list):
            return [_unit(f"index {i}", f"#{i}", v, big) for i, v in enumerate(whole)]
        if isinstance(whole, dict):  # one object, perhaps pretty-printed over many lines
            n = text[: len(text) - len(text.lstrip())].count("\n")  # blank lines before it
            return [_unit(f"line {n + 1}", f":{n + 1}", whole, big)]
    units = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if (big := too_big(line)) is not None:
            units.append(Unit(f"line {n}", f":{n}", error=big))
            continue
        try:
            value, error = loads_checked(line)
        except json.JSONDecodeError:
            value, error = None, "invalid JSON"
        units.append(Unit(f"line {n}", f":{n}", value, error))
    return units


def _unit(location: str, tag: str, value: Any, check_size: bool) -> Unit:
    """A unit of an already parsed array or object, checked for size and lone surrogates."""
    if check_size:
        try:
            big = too_big(orjson.dumps(value).decode())
        except (TypeError, orjson.JSONEncodeError):
            big = None  # a lone surrogate: reported below
        if big is not None:
            return Unit(location, tag, error=big)
    where = surrogate_at(value)
    if where is None:
        return Unit(location, tag, value)
    return Unit(location, tag, error=f"{where}: lone surrogate in the text (not valid Unicode); "
                "remove or fix that character")


def json_objects(path: Path, display: str, record_type: str | None, out: Parsed) -> Iterator[Unit]:
    """The units of ``path`` (see :func:`json_units`) that are JSON objects; the others become
    rejects in ``out`` ("invalid JSON", "not a JSON object")."""
    for unit in json_units(path):
        if unit.error:
            out.rejects.append(Reject(display, unit.location, record_type, unit.error))
        elif not isinstance(unit.value, dict):
            out.rejects.append(Reject(display, unit.location, record_type, "not a JSON object"))
        else:
            yield unit


def json_document(path: Path) -> Any:
    """A file holding one JSON value (array or object)."""
    text = read_text(path)
    try:
        value, error = loads_checked(text)
    except json.JSONDecodeError as exc:
        raise FileRejected(f"invalid JSON (line {exc.lineno}: {exc.msg})") from None
    if error is not None:
        raise FileRejected(error)
    return value


def as_text(value: Any) -> str:
    """A source value as one string: lists joined with '、', mappings as 'key：value' pairs."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "、".join(t for t in (as_text(v) for v in value) if t.strip())
    if isinstance(value, dict):
        return "；".join(f"{k}：{as_text(v)}" for k, v in value.items() if as_text(v).strip())
    return str(value)


def as_list(value: Any) -> list[str]:
    """A source value as a list of strings (a string is one item; a mapping 'key：value' items)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [t for t in (as_text(v) for v in value) if t.strip()]
    if isinstance(value, dict):
        return [f"{k}：{as_text(v)}" for k, v in value.items() if as_text(v).strip()]
    text = as_text(value)
    return [text] if text.strip() else []
