"""People as the judge: blind rating tasks out, annotations back in, agreement, the same tables.

``export_human`` turns an eval results directory (``replies.jsonl``) into task files people fill
in, as CSV (spreadsheets) and JSONL (annotation tools), one pair per task kind:

- ``pointwise.csv|jsonl``: one reply per row, a column per rubric dimension to score 1-5;
- ``pairwise.csv|jsonl``: two replies to the same prompt, ``preference`` = ``1``, ``2`` or ``tie``;
- ``turing.csv|jsonl``: one reply per row, the dataset's human-written reference replies mixed
  with model replies; ``author`` = ``human`` or ``model`` (who do you think wrote it?).

Tasks are blind: rows are shuffled, models never named, the two sides of a pair in random
order; which model (or person) wrote what is only in the **key file**, written apart from the
task folder (never inside it, so the folder can be handed out as it is) together with
``instructions.md`` (the rubric's definitions and scale anchors). Every row carries the
export's random ``export_id`` and a ``fingerprint`` of the texts it shows, so a row can only be
read back against the key it was exported with; CSV cells that a spreadsheet would run as a
formula (``=``, ``+``, ``-``, ``@``, tab, CR) are written behind an apostrophe, removed again on
import.

``import_human`` reads any number of filled-in files (one annotator each, named by their
``annotator`` column or else the file name), checks every value, and writes a results
directory like ``charops eval run`` does: point-wise records (the mean of the annotators'
scores per reply), pair-wise records (the annotators' majority; an even split is a tie), the
summary from :func:`charops.eval.aggregate.summarize` with judge ``human``, plus agreement
(Cohen's kappa for two annotators, Fleiss' kappa for more, Krippendorff's alpha for any
number, with missing ratings) and the Turing test (how often a model's reply was taken for a
person's, against how often the people's own were), and the reports::

    charops eval export-human runs/eval --out runs/human/tasks          # key: runs/human/tasks.key.json
    charops eval import-human runs/human/tasks.key.json alice.csv bob.csv --out runs/human/results
"""

from __future__ import annotations

import csv
import json
import math
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charops.errors import DataError
from charops.eval.stats import agreement
from charops.eval.summary import read_eval_summary
from charops.io import (
    atomic_dir,
    check_output,
    read_jsonl,
    sha256_bytes,
    write_json,
    write_jsonl,
    write_text,
)

KEY_SCHEMA = "charops.human_key/v2"
TASKS = ("pointwise", "pairwise", "turing")
PREFERENCE = {"1": "first", "2": "second", "tie": "tie"}
AUTHORS = ("human", "model")


# ---------------------------------------------------------------------------------------------
# Export


def _context(record: dict) -> str:
    from charops.eval.rubric import render_context

    return render_context(record.get("messages") or [], record.get("character"))


def _profile(record: dict) -> str:
    return record.get("system") or next((m.get("content") or "" for m in record.get("messages") or []
                                         if m.get("role") == "system"), "")


def _instructions(rubric: Any, tasks: Sequence[str]) -> str:
    lo, hi = rubric.scale
    lines = ["# Rating instructions", "",
             "You see replies of a role-play character to a conversation. Who wrote each reply is "
             "hidden; judge the reply alone, against the character's profile and the conversation.",
             "Write your name in the `annotator` column (or keep the file name as it is: it names "
             "you). Leave a cell empty to skip it. Do not change the other columns: `export_id` and "
             "`fingerprint` tie each row to the texts it shows.", ""]
    if "pointwise" in tasks:
        lines += ["## pointwise.csv / pointwise.jsonl", "",
                  f"Score every dimension from {lo} to {hi}:", ""]
        for d in rubric.dimensions:
            lines += [f"- **{d['key']}**: {d['definition']}",
                      *(f"  - {score}: {text}" for score, text in sorted(d["anchors"].items()))]
        lines.append("")
    if "pairwise" in tasks:
        lines += ["## pairwise.csv / pairwise.jsonl", "",
                  "Two replies to the same conversation. `preference`: `1` if reply_1 is the "
                  "better reply of this character (all dimensions above taken together), `2` if "
                  "reply_2 is, `tie` if neither is better.", ""]
    if "turing" in tasks:
        lines += ["## turing.csv / turing.jsonl", "",
                  "Some replies were written by people, some by a model. `author`: `human` if you "
                  "think a person wrote the reply, `model` if you think a model did.", ""]
    return "\n".join(lines)


# CSV cells a spreadsheet would run as a formula (OWASP "CSV injection"): a cell starting with
# one of these is written with a leading apostrophe, which spreadsheets show as text. The
# apostrophe itself is in the set so that escaping can be undone exactly on import.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
# The texts an annotator sees in each task's rows; their fingerprint ties a row to its key entry.
SHOWN = {"pointwise": ("character", "profile", "context", "reply"),
         "pairwise": ("character", "profile", "context", "reply_1", "reply_2"),
         "turing": ("character", "profile", "context", "reply")}
ANSWERS = {"pointwise": None, "pairwise": ("preference",), "turing": ("author",)}  # None: dimensions


def csv_cell(value: Any) -> Any:
    """A CSV cell no spreadsheet runs as a formula (``=1+1`` -> ``'=1+1``)."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def csv_value(cell: Any) -> Any:
    """The value :func:`csv_cell` escaped (``'=1+1`` -> ``=1+1``); other cells unchanged."""
    if isinstance(cell, str) and cell.startswith("'") and cell[1:].startswith(_FORMULA_START):
        return cell[1:]
    return cell


def fingerprint(task: str, row: dict) -> str:
    """sha256 (16 hex digits) of the texts the annotator saw in ``row``, line ends normalised
    (a spreadsheet may save CRLF) and trailing white space dropped."""
    shown = [str(row.get(k) or "").replace("\r\n", "\n").rstrip() for k in SHOWN[task]]
    return sha256_bytes(json.dumps(shown, ensure_ascii=False).encode("utf-8"))[:16]


def _columns(task: str, dims: Sequence[str]) -> list[str]:
    """A task file's columns: what identifies the row, what the annotator sees, what they fill in."""
    return ["task", "task_id", "annotator", *SHOWN[task], *(ANSWERS[task] or dims), "comment",
            "export_id", "fingerprint"]


def _write_task(folder: Path, task: str, rows: list[dict], columns: list[str]) -> None:
    write_jsonl(folder / f"{task}.jsonl", rows)
    with (folder / f"{task}.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)


def _check_export_paths(results: Path, out: Path, key_file: Path, tasks: Sequence[str]) -> None:
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise DataError(f"export-human: unknown task '{unknown[0] if unknown else ''}' "
                        f"(tasks: {', '.join(TASKS)})")
    if not (results / "replies.jsonl").is_file():
        raise DataError(f"{results}: no replies.jsonl; run `charops eval run` first")
    check_output(out, inputs={"the results directory": results}, option="--out", overwrite_hint=None,
                 error=DataError)
    if out.resolve() == key_file.resolve() or out.resolve() in key_file.resolve().parents:
        raise DataError(f"export-human: the key file {key_file} must not be inside the task "
                        f"folder {out} (the folder is what annotators get)")
    if key_file.exists():
        raise DataError(f"export-human: key file {key_file} exists; move it away or choose --key")


def _shown(rec: dict) -> dict:
    return {"character": rec.get("character") or "", "profile": _profile(rec), "context": _context(rec)}


# Each task's items: (what the row shows and asks, what the key keeps), from the prompt ids, the
# replies by prompt and model, the rubric's dimensions, the seeded shuffler and the Turing models.
def _pointwise_items(ids, by_id, dims, rng, turing_models) -> list[tuple[dict, dict]]:
    """Every reply of every model, to be scored on each dimension."""
    return [({**_shown(rec), "reply": rec.get("reply") or "", **dict.fromkeys(dims, "")},
             {"id": i, "model": model}) for i in ids for model, rec in by_id[i].items()]


def _pairwise_items(ids, by_id, dims, rng, turing_models) -> list[tuple[dict, dict]]:
    """Candidate and baseline replies to the same prompt, in random order."""
    items = []
    for i in ids:
        if {"candidate", "baseline"} <= set(by_id[i]):
            first, second = rng.sample(["candidate", "baseline"], 2)
            items.append(({**_shown(by_id[i][first]), "reply_1": by_id[i][first].get("reply") or "",
                           "reply_2": by_id[i][second].get("reply") or "", "preference": ""},
                          {"id": i, "first": first, "second": second}))
    return items


def _turing_items(ids, by_id, dims, rng, turing_models) -> list[tuple[dict, dict]]:
    """The dataset's human-written reference replies mixed with the models' replies."""
    items = []
    for i in ids:
        some = next(iter(by_id[i].values()))
        if some.get("reference"):
            items.append(({**_shown(some), "reply": some["reference"], "author": ""},
                          {"id": i, "source": "human", "model": None}))
        items += [({**_shown(by_id[i][m]), "reply": by_id[i][m].get("reply") or "", "author": ""},
                   {"id": i, "source": "model", "model": m}) for m in turing_models if m in by_id[i]]
    return items


_ITEMS = {"pointwise": _pointwise_items, "pairwise": _pairwise_items, "turing": _turing_items}


def _numbered(task: str, items: list[tuple[dict, dict]], export_id: str,
              rng: random.Random) -> tuple[list[dict], dict[str, dict]]:
    """Shuffle, then number: (rows for the annotators, {task_id: what the key keeps})."""
    rng.shuffle(items)
    rows, keyed = [], {}
    for n, (shown, secret) in enumerate(items, 1):
        task_id = f"{task[:2].upper()}{n:04d}"
        mark = fingerprint(task, shown)
        rows.append({"task": task, "task_id": task_id, "annotator": "", **shown, "comment": "",
                     "export_id": export_id, "fingerprint": mark})
        keyed[task_id] = {**secret, "fingerprint": mark}
    return rows, keyed


def export_human(results_dir: str | Path, out_dir: str | Path, *, key_path: str | Path | None = None,
                 tasks: Sequence[str] = TASKS, rubric: str = "characterglm-v1", seed: int = 0,
                 max_items: int = 0, turing_models: Sequence[str] = ("candidate",)) -> dict:
    """Write blind task files into ``out_dir`` and the key to ``key_path`` (default
    ``<out_dir>.key.json``, beside the folder). Returns counts per task and the two paths."""
    from charops.eval.rubric import load_rubric

    results, out = Path(results_dir), Path(out_dir)
    key_file = Path(key_path) if key_path is not None else out.with_name(out.name + ".key.json")
    _check_export_paths(results, out, key_file, tasks)
    rub = load_rubric(rubric)
    by_id: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in read_jsonl(results / "replies.jsonl"):
        by_id[str(r["id"])][r.get("model") or "candidate"] = r
    rng = random.Random(seed)
    ids = sorted(by_id)
    rng.shuffle(ids)
    ids = ids[:max_items] if max_items else ids
    # A fresh id per export (never seeded): a file filled in from one export cannot be read
    # against another export's key, even one of the same results and seed.
    export_id = uuid.uuid4().hex
    key: dict[str, Any] = {
        "schema": KEY_SCHEMA, "export_id": export_id, "results_dir": str(results),
        "rubric": rub.ident, "rubric_name": rub.name, "scale": list(rub.scale), "dimensions": rub.keys,
        "seed": seed, "tasks": {},
        "prompts": {i: {k: next(iter(by_id[i].values())).get(k) for k in ("character", "category", "topic")}
                    for i in ids}}
    files: dict[str, list[dict]] = {}
    for task in (t for t in TASKS if t in tasks):
        items = _ITEMS[task](ids, by_id, rub.keys, rng, turing_models)
        files[task], key["tasks"][task] = _numbered(task, items, export_id, rng)
    with atomic_dir(out, overwrite=True) as tmp:
        for task, rows in files.items():
            _write_task(tmp, task, rows, _columns(task, rub.keys))
        write_text(tmp / "instructions.md", _instructions(rub, list(files)))
        write_json(key_file, key)
    return {"out": str(out), "key": str(key_file), "export_id": export_id,
            "counts": {task: len(rows) for task, rows in files.items()}}


# ---------------------------------------------------------------------------------------------
# Import


def _read_annotations(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a filled-in CSV or JSONL task file (CSV: record number, header 1;
    cells unescaped as :func:`csv_cell` wrote them)."""
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file")
    n = 0
    try:
        if path.suffix == ".jsonl":
            rows = []
            with path.open(encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict):
                            raise DataError(f"{path}:{n}: expected a JSON object per line")
                        rows.append((n, row))
            return rows
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return [(n, {k: csv_value(v) for k, v in row.items()})
                    for n, row in enumerate(csv.DictReader(fh), 2)]
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise DataError(f"{path}:{n}: JSON nested too deeply; a task row is one flat object") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read it as {path.suffix[1:] or 'CSV'} ({exc})") from None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _score(value: Any, lo: int, hi: int, where: str) -> int:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not number.is_integer() or not lo <= number <= hi:
        raise DataError(f"{where}: '{value}' is not a score from {lo} to {hi}")
    return int(number)


def _choice(value: Any, allowed: Sequence[str], where: str) -> str:
    text = str(value).strip().lower()
    if text not in allowed:
        raise DataError(f"{where}: '{value}' is not one of {', '.join(allowed)}")
    return text


def _check_row(key: dict, row: dict, where: str) -> tuple[str, str]:
    """(task, task_id) of a row that belongs to this key: its task id is in the key, it was
    exported with this key (export id) and it shows the texts the key's entry was made from."""
    task, task_id = str(row.get("task") or "").strip(), str(row.get("task_id") or "").strip()
    if task not in TASKS or task_id not in key["tasks"].get(task, {}):
        raise DataError(f"{where}: task '{task}' / task_id '{task_id}' is not in the key "
                        "file; import the files exported with this key")
    if str(row.get("export_id") or "").strip() != key["export_id"]:
        raise DataError(f"{where}: export_id '{row.get('export_id') or ''}' is not this key's "
                        f"('{key['export_id']}'): the file comes from another export; import it "
                        "with the key file written next to it")
    expected = key["tasks"][task][task_id]["fingerprint"]
    given = str(row.get("fingerprint") or "").strip()
    if given != expected or (all(k in row for k in SHOWN[task]) and fingerprint(task, row) != expected):
        raise DataError(f"{where}: {task_id} does not show the texts the key has for {task_id} "
                        f"(fingerprint {given or 'missing'} / of its texts {fingerprint(task, row)}, "
                        f"key {expected}); the row was changed or comes from another export")
    return task, task_id


def _answer(key: dict, task: str, row: dict, where: str) -> dict:
    """The checked answer of one row ({} when its answer cells are empty)."""
    if task == "pointwise":
        lo, hi = key["scale"]
        return {d: _score(row[d], lo, hi, f"{where}: field '{d}'")
                for d in key["dimensions"] if not _blank(row.get(d))}
    field_ = ANSWERS[task][0]
    if _blank(row.get(field_)):
        return {}
    allowed = list(PREFERENCE) if task == "pairwise" else list(AUTHORS)
    value = _choice(row[field_], allowed, f"{where}: field '{field_}'")
    return {field_: PREFERENCE[value] if task == "pairwise" else value}


def read_ratings(key: dict, files: Sequence[str | Path]) -> dict[str, dict[str, dict[str, dict]]]:
    """{task: {annotator: {task_id: answer}}} from filled-in files, every row and value checked."""
    ratings: dict[str, dict[str, dict[str, dict]]] = {t: defaultdict(dict) for t in TASKS}
    for file in map(Path, files):
        for line, row in _read_annotations(file):
            where = f"{file}:{line}"
            task, task_id = _check_row(key, row, where)
            answer = _answer(key, task, row, where)
            if not answer:
                continue
            annotator = str(row.get("annotator") or "").strip() or file.stem
            if task_id in ratings[task][annotator]:
                raise DataError(f"{where}: annotator '{annotator}' rated {task_id} twice")
            ratings[task][annotator][task_id] = answer
    return {t: dict(r) for t, r in ratings.items() if r}


def _pointwise_records(key: dict, ratings: dict) -> list[dict]:
    per_item: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for answers in ratings.values():
        for task_id, scores in answers.items():
            for dim, value in scores.items():
                per_item[task_id][dim].append(value)
    records = []
    for task_id, dims in sorted(per_item.items()):
        secret = key["tasks"]["pointwise"][task_id]
        records.append({"id": secret["id"], "model": secret["model"], "judge": "human",
                        "rubric": key["rubric"], "task_id": task_id, "raters": max(map(len, dims.values())),
                        "scores": {d: sum(v) / len(v) for d, v in dims.items()}, "raw": None, "error": None})
    return records


def _pairwise_records(key: dict, ratings: dict) -> list[dict]:
    votes: dict[str, list[str]] = defaultdict(list)
    for answers in ratings.values():
        for task_id, answer in answers.items():
            votes[task_id].append(answer["preference"])
    records = []
    for task_id, vs in sorted(votes.items()):
        secret = key["tasks"]["pairwise"][task_id]
        first, second = vs.count("first"), vs.count("second")
        winner = secret["first"] if first > second else secret["second"] if second > first else None
        verdict = "tie" if winner is None else ("win" if winner == "candidate" else "lose")
        records.append({"id": secret["id"], "a": "candidate", "b": "baseline", "judge": "human",
                        "task_id": task_id, "votes": dict(Counter(vs)), "verdict_ab": None,
                        "verdict_ba": None, "verdict": verdict})
    return records


def turing_result(key: dict, ratings: dict) -> dict:
    """How often annotators said ``human``: for each model's replies and for the people's own."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for answers in ratings.values():
        for task_id, answer in answers.items():
            secret = key["tasks"]["turing"][task_id]
            source = "human (reference)" if secret["source"] == "human" else secret["model"]
            counts[source][answer["author"]] += 1
    return {source: {"judgements": sum(c.values()), "taken_for_human": c["human"],
                     "taken_for_human_pct": 100.0 * c["human"] / sum(c.values())}
            for source, c in sorted(counts.items())}


def agreements(key: dict, ratings: dict) -> dict:
    """Agreement per question: each point-wise dimension (ordinal), the pair preference and the
    Turing answer (nominal)."""
    def of(task: str, field_: str) -> dict[str, dict[str, Any]]:
        return {a: {t: s[field_] for t, s in r.items() if field_ in s} for a, r in ratings[task].items()}

    out: dict[str, Any] = {}
    if "pointwise" in ratings:
        scale = list(range(key["scale"][0], key["scale"][1] + 1))
        out["pointwise"] = {d: agreement(of("pointwise", d), "ordinal", scale) for d in key["dimensions"]}
    if "pairwise" in ratings:
        out["pairwise"] = agreement(of("pairwise", "preference"), "nominal", list(PREFERENCE.values()))
    if "turing" in ratings:
        out["turing"] = agreement(of("turing", "author"), "nominal", AUTHORS)
    return out


_KEY_FIELDS = {"export_id": str, "results_dir": str, "rubric": str, "scale": list, "dimensions": list,
               "prompts": dict, "tasks": dict}
# What the key keeps for each task id, per task.
_SECRET = {"pointwise": ("id", "model", "fingerprint"), "pairwise": ("id", "first", "second", "fingerprint"),
           "turing": ("id", "source", "model", "fingerprint")}


def read_key(key_path: str | Path) -> dict:
    """The key file export-human wrote, checked."""
    key_file = Path(key_path)
    if not key_file.is_file():
        raise DataError(f"{key_file}: no such key file (export-human writes it)")
    try:
        key = json.loads(key_file.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{key_file}: not valid JSON ({type(exc).__name__})") from None
    if isinstance(key, dict) and key.get("schema") == "charops.human_key/v1":
        raise DataError(f"{key_file}: a key of an older charops, whose task files carry no export id "
                        "or fingerprint to check; export the tasks again")
    if not isinstance(key, dict) or key.get("schema") != KEY_SCHEMA:
        raise DataError(f"{key_file}: not a charops human-evaluation key (schema {KEY_SCHEMA})")
    for field_, kind in _KEY_FIELDS.items():
        if not isinstance(key.get(field_), kind):
            raise DataError(f"{key_file}: field '{field_}' is missing or not a JSON "
                            f"{'object' if kind is dict else 'list' if kind is list else 'string'}; "
                            "use the key file export-human wrote")
    scale, tasks = key["scale"], key["tasks"]
    if len(scale) != 2 or not all(isinstance(v, int) for v in scale) or not set(tasks) <= set(TASKS) \
            or not all(isinstance(entries, dict) and all(
                isinstance(e, dict) and all(k in e for k in _SECRET[task]) for e in entries.values())
                for task, entries in tasks.items()):
        raise DataError(f"{key_file}: its 'scale' or 'tasks' are not what export-human writes; "
                        "use the key file export-human wrote")
    return key


def _check_import_paths(out: Path, results: Path, inputs: Sequence[Path]) -> None:
    check_output(out, inputs=[("the results directory", results), *(("an input", p) for p in inputs)],
                 option="--out", overwrite_hint=None, error=DataError)


def import_human(key_path: str | Path, files: Sequence[str | Path], out_dir: str | Path, *,
                 results_dir: str | Path | None = None) -> dict:
    """Read annotations against their key, write a results directory with the summary, the
    records and the reports; returns the summary. ``results_dir`` (default: the one the key
    names) supplies replies and automatic signals, when it is there."""
    from charops.eval.aggregate import summarize
    from charops.eval.report import write_reports

    key = read_key(key_path)
    if not files:
        raise DataError("import-human: give at least one filled-in annotation file")
    results, out = Path(results_dir or key["results_dir"]), Path(out_dir)
    _check_import_paths(out, results, [Path(key_path), *map(Path, files)])
    ratings = read_ratings(key, files)
    if not ratings:
        raise DataError("import-human: the files hold no ratings (every answer cell is empty)")
    replies = list(read_jsonl(results / "replies.jsonl")) if (results / "replies.jsonl").is_file() else [
        {"id": i, "model": "candidate", **info} for i, info in key["prompts"].items()]
    original = read_eval_summary(results / "eval_summary.json") \
        if (results / "eval_summary.json").exists() else {}

    pointwise = _pointwise_records(key, ratings["pointwise"]) if "pointwise" in ratings else []
    pairwise = _pairwise_records(key, ratings["pairwise"]) if "pairwise" in ratings else []
    annotators = sorted({a for r in ratings.values() for a in r})
    judge = {"kind": "human", "model": f"{len(annotators)} annotators", "rubric": key["rubric"],
             "annotators": len(annotators),
             "pointwise_aggregation": "mean of the annotators' scores per reply",
             "pairwise_aggregation": "majority of the annotators; an even split is a tie"}
    summary = summarize(replies, pointwise, pairwise, judge=judge, automatic=original.get("automatic"),
                        skipped=[f"{task}: no ratings imported" for task in TASKS if task not in ratings],
                        candidate=original.get("candidate"), baseline=original.get("baseline"),
                        dimensions=key["dimensions"])
    summary["agreement"] = agreements(key, ratings)
    if "turing" in ratings:
        summary["turing"] = turing_result(key, ratings["turing"])
    summary["annotators"] = annotators

    with atomic_dir(out, overwrite=True) as tmp:
        write_jsonl(tmp / "replies.jsonl", replies)
        write_jsonl(tmp / "pointwise.jsonl", pointwise)
        write_jsonl(tmp / "pairwise.jsonl", pairwise)
        write_jsonl(tmp / "human_ratings.jsonl",
                    [{"task": t, "annotator": a, "task_id": i, **ans}
                     for t, r in sorted(ratings.items()) for a, answers in sorted(r.items())
                     for i, ans in sorted(answers.items())])
        write_json(tmp / "eval_summary.json", summary)
        write_reports(tmp)
    return summary
