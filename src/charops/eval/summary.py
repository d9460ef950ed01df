"""The one reader of ``eval_summary.json`` (schema ``charops.eval_summary/v1``, docs/evaluation.md).

Every consumer reads a summary through :func:`read_eval_summary`: the reports
(:func:`load_results`), the promotion gate (``promote --eval-summary``), the registry card
(``register --reports``) and ``charops eval import-human`` (the automatic signals of the
original run). One schema check, one set of one-line errors naming the file::

    from charops.eval.summary import load_results, read_eval_summary
    summary = read_eval_summary("runs/eval/eval_summary.json")   # dict, or DataError
    results = load_results("runs/eval")                          # summary + the records beside it
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from charops.errors import DataError
from charops.io import read_jsonl

SCHEMA = "charops.eval_summary/v1"
# A summary is kilobytes to a few megabytes (tables, not records); anything far larger is not one.
MAX_BYTES = 64 << 20
# Top-level keys the readers index into, and the JSON type each must have when present.
_SHAPE = {"candidate": dict, "baseline": dict, "judge": dict, "pairwise": dict, "pointwise": dict,
          "automatic": dict, "pairwise_others": dict, "bradley_terry": dict, "agreement": dict,
          "turing": dict, "multiturn": dict, "others": list, "skipped": list}
_FIX = "give the eval_summary.json that `charops eval run` (or the evaluate step) wrote"


def read_eval_summary(path: str | Path) -> dict:
    """The summary in ``path``, checked: a JSON object of schema ``charops.eval_summary/v1``
    whose known keys have the right types. Anything else is a :class:`DataError` naming the
    file and what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not an eval summary; give the file "
                        f"({path / 'eval_summary.json'})")
    if not path.exists():
        raise DataError(f"{path}: no such eval summary; {_FIX}")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; {_FIX}")
    if path.stat().st_size > MAX_BYTES:
        raise DataError(f"{path}: {path.stat().st_size} bytes, far too large for an eval summary; {_FIX}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (a binary file?); {_FIX}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); {_FIX}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be an eval summary; {_FIX}") from None
    return check_eval_summary(summary, str(path))


def check_eval_summary(summary: object, where: str) -> dict:
    """``summary`` itself if it is an eval summary this charops reads, else a :class:`DataError`
    that starts with ``where``."""
    if not isinstance(summary, dict) or "schema" not in summary:
        found = "an object without 'schema'" if isinstance(summary, dict) else \
            f"a JSON {type(summary).__name__}"
        raise DataError(f"{where}: not an eval summary ({found}; expected 'schema': '{SCHEMA}'); {_FIX}")
    schema = summary["schema"]
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith(SCHEMA.rsplit("/", 1)[0] + "/"):
            raise DataError(f"{where}: eval summary version '{schema}' is not one this charops "
                            f"reads ('{SCHEMA}'); re-run the evaluation with this version")
        raise DataError(f"{where}: schema is {schema!r}, expected {SCHEMA!r}")
    for key, kind in _SHAPE.items():
        value = summary.get(key)
        if value is not None and not isinstance(value, kind):
            raise DataError(f"{where}: field '{key}' is a JSON {type(value).__name__}, expected "
                            f"{'an object' if kind is dict else 'a list'}; {_FIX}")
    return summary


@dataclass
class Results:
    """An eval results directory, read: the summary and the records beside it."""

    summary: dict
    replies: list[dict] = field(default_factory=list)
    pointwise: list[dict] = field(default_factory=list)
    pairwise: list[dict] = field(default_factory=list)


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        return list(read_jsonl(path))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: not valid JSONL ({type(exc).__name__}); re-run `charops eval run`") \
            from None


def load_results(results_dir: str | Path) -> Results:
    """Read ``eval_summary.json`` (required) and whichever record files exist."""
    root = Path(results_dir)
    path = root / "eval_summary.json"
    if root.is_dir() and not path.exists():
        raise DataError(f"{root}: no eval_summary.json; point at the results directory of "
                        "`charops eval run` (or the evaluate step's `results` artifact)")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; point at the results directory of "
                        "`charops eval run` (or the evaluate step's `results` artifact)")
    return Results(read_eval_summary(path), _records(root / "replies.jsonl"),
                   _records(root / "pointwise.jsonl"), _records(root / "pairwise.jsonl"))
