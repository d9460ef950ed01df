"""Plain text for continued pretraining, as :class:`~charops.data.schema.CorpusDocument` records.

- ``.txt``: documents are separated by one or more blank lines (a paragraph is a document;
  a file with no blank line is one document). Ids are ``<file stem>-<n>`` (n from 1); the
  source is ``<file>:<first line>``. Paragraphs suit novels and wikis, where a blank line is
  the unit boundary, and pretraining packs documents into blocks anyway.
- JSONL (or a JSON array) with a ``text`` field: ``id``, ``language`` and ``source`` are kept
  when present, other fields go to ``meta``; a line without ``id`` gets ``<file stem>-<line>``::

    from pathlib import Path
    from charops.data.importers import text
    parsed = text.parse(Path("novel.txt"), "novel.txt")
"""

from __future__ import annotations

from pathlib import Path

from charops.data.importers.common import Parsed, Reject, build, json_objects, read_text, too_big
from charops.data.schema import CorpusDocument

_OWN_KEYS = {"id", "text", "language", "source", "type", "meta"}


def paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line number, paragraph) for each run of non-blank lines."""
    out: list[tuple[int, str]] = []
    start, lines = 0, []
    for n, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            if not lines:
                start = n
            lines.append(line)
        elif lines:
            out.append((start, "\n".join(lines)))
            lines = []
    if lines:
        out.append((start, "\n".join(lines)))
    return out


def parse_txt(path: Path, display: str) -> Parsed:
    out = Parsed()
    for n, (line, para) in enumerate(paragraphs(read_text(path)), start=1):
        if (big := too_big(para)) is not None:
            out.rejects.append(Reject(display, f"paragraph {n} (line {line})", "document", big))
            continue
        record = CorpusDocument(id=f"{path.stem}-{n}", text=para, source=f"{display}:{line}")
        out.records.append((record, f"line {line}"))
    return out


def parse_jsonl(path: Path, display: str) -> Parsed:
    out = Parsed()
    for unit in json_objects(path, display, "document", out):
        obj = unit.value
        if "text" not in obj:
            out.rejects.append(Reject(display, unit.location, "document", "text: Field required"))
            continue
        if not isinstance(obj.get("meta") or {}, dict):
            out.rejects.append(Reject(display, unit.location, "document", "meta: must be an object"))
            continue
        data = {
            "id": str(obj["id"]) if obj.get("id") not in (None, "") else f"{path.stem}-{unit.tag[1:]}",
            "text": obj["text"],
            "source": obj.get("source") or f"{display}{unit.tag}",
            "meta": {**(obj.get("meta") or {}), **{k: v for k, v in obj.items() if k not in _OWN_KEYS}},
        }
        if obj.get("language") is not None:
            data["language"] = obj["language"]
        record = build(CorpusDocument, data)
        if isinstance(record, str):
            out.rejects.append(Reject(display, unit.location, "document", record))
        else:
            out.records.append((record, unit.location))
    return out


def parse(path: Path, display: str, character: str | None = None) -> Parsed:
    """``.txt`` files by paragraphs, anything else as JSONL/JSON with a ``text`` field."""
    return parse_txt(path, display) if path.suffix.lower() == ".txt" else parse_jsonl(path, display)
