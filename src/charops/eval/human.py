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
``instructions.md`` (the rubric's definitions and scale anchors).

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
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charops.errors import DataError
from charops.eval.summary import read_eval_summary
from charops.io import atomic_dir, read_jsonl, write_json, write_jsonl, write_text

KEY_SCHEMA = "charops.human_key/v1"
TASKS = ("pointwise", "pairwise", "turing")
PREFERENCE = {"1": "first", "2": "second", "tie": "tie"}
AUTHORS = ("human", "model")


# ---------------------------------------------------------------------------------------------
# Agreement


def cohen_kappa(first: Sequence[Any], second: Sequence[Any]) -> float | None:
    """Cohen's kappa of two annotators' labels on the same items: (p_o - p_e) / (1 - p_e).

    p_o is the share of items they agree on, p_e the agreement expected from each one's label
    frequencies. None when undefined (no items, or both always give the one same label).
    """
    if len(first) != len(second):
        raise ValueError("cohen_kappa: the two label lists differ in length")
    n = len(first)
    if n == 0:
        return None
    p_o = sum(a == b for a, b in zip(first, second, strict=True)) / n
    c1, c2 = Counter(first), Counter(second)
    p_e = sum(c1[k] * c2[k] for k in c1) / (n * n)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an items x categories table of how many annotators chose each.

    Every item needs the same number of ratings m >= 2. P_i = (sum_j n_ij^2 - m) / (m(m-1)),
    P_e = sum_j p_j^2 with p_j the share of all ratings in category j; kappa = (mean P_i - P_e)
    / (1 - P_e). None when undefined (no items, or a single category used throughout).
    """
    if not counts:
        return None
    m = sum(counts[0])
    if m < 2 or any(sum(row) != m for row in counts):
        raise ValueError("fleiss_kappa: every item needs the same number (>= 2) of ratings")
    n_items = len(counts)
    p_bar = sum((sum(c * c for c in row) - m) / (m * (m - 1)) for row in counts) / n_items
    totals = [sum(col) for col in zip(*counts, strict=True)]
    p_e = sum((t / (n_items * m)) ** 2 for t in totals)
    return None if p_e == 1 else (p_bar - p_e) / (1 - p_e)


def krippendorff_alpha(units: Sequence[Sequence[Any]], metric: str = "nominal") -> float | None:
    """Krippendorff's alpha, 1 - D_o / D_e, over units rated by any subset of annotators.

    ``units``: per item, the values the annotators gave (None or missing = not rated). Units
    with fewer than two values are not pairable and left out. Coincidences: each ordered pair
    of values within a unit of m values adds 1/(m-1); D_o and D_e are the mean squared
    difference (``metric``: ``nominal`` 0/1, ``ordinal`` by ranks of the pooled value counts,
    ``interval`` (c-k)^2) within units and over all pairable values. None when undefined (fewer
    than two values, or no variation at all).
    """
    pairable = [[v for v in unit if v is not None] for unit in units]
    pairable = [u for u in pairable if len(u) >= 2]
    coincide: dict[tuple[Any, Any], float] = defaultdict(float)
    for unit in pairable:
        m = len(unit)
        for i, a in enumerate(unit):
            for j, b in enumerate(unit):
                if i != j:
                    coincide[(a, b)] += 1.0 / (m - 1)
    totals: dict[Any, float] = defaultdict(float)
    for (a, _), w in coincide.items():
        totals[a] += w
    n = sum(totals.values())
    if n < 2:
        return None
    values = sorted(totals)

    if metric == "nominal":
        def delta(a, b):
            return 0.0 if a == b else 1.0
    elif metric == "interval":
        def delta(a, b):
            return (float(a) - float(b)) ** 2
    elif metric == "ordinal":
        rank = {v: i for i, v in enumerate(values)}

        def delta(a, b):
            lo, hi = sorted((rank[a], rank[b]))
            between = sum(totals[values[g]] for g in range(lo, hi + 1))
            return (between - (totals[a] + totals[b]) / 2.0) ** 2
    else:
        raise ValueError(f"krippendorff_alpha: unknown metric {metric!r}")

    d_o = sum(w * delta(a, b) for (a, b), w in coincide.items()) / n
    d_e = sum(totals[a] * totals[b] * delta(a, b) for a in values for b in values) / (n * (n - 1))
    return None if d_e == 0 else 1.0 - d_o / d_e


def agreement(ratings: dict[str, dict[str, Any]], metric: str, categories: Sequence[Any]) -> dict:
    """Agreement of annotators' ``ratings`` ({annotator: {item: value}}) on one question.

    Cohen's kappa with exactly two annotators (items both rated), Fleiss' kappa with three or
    more (items every annotator rated), Krippendorff's alpha always (all items, missing
    allowed), and the raw share of items on which all their raters agree.
    """
    annotators = sorted(ratings)
    items = sorted({i for r in ratings.values() for i in r})
    units = [[ratings[a].get(i) for a in annotators] for i in items]
    shared = [i for i in items if all(i in ratings[a] for a in annotators)]
    multi = [[v for v in u if v is not None] for u in units]
    multi = [u for u in multi if len(u) >= 2]
    out: dict[str, Any] = {
        "annotators": len(annotators), "items": len(items), "items_multiply_rated": len(multi),
        "percent_agreement": (100.0 * sum(len(set(u)) == 1 for u in multi) / len(multi)) if multi else None,
        f"krippendorff_alpha_{metric}": krippendorff_alpha(units, metric)}
    if len(annotators) == 2:
        a, b = annotators
        out["cohen_kappa"] = cohen_kappa([ratings[a][i] for i in shared], [ratings[b][i] for i in shared])
    elif len(annotators) > 2 and shared:
        index = {c: k for k, c in enumerate(categories)}
        table = []
        for i in shared:
            row = [0] * len(categories)
            for a in annotators:
                row[index[ratings[a][i]]] += 1
            table.append(row)
        out["fleiss_kappa"] = fleiss_kappa(table)
    return out


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
             "you). Leave a cell empty to skip it.", ""]
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


def _write_task(folder: Path, task: str, rows: list[dict], columns: list[str]) -> None:
    write_jsonl(folder / f"{task}.jsonl", rows)
    with (folder / f"{task}.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def export_human(results_dir: str | Path, out_dir: str | Path, *, key_path: str | Path | None = None,
                 tasks: Sequence[str] = TASKS, rubric: str = "characterglm-v1", seed: int = 0,
                 max_items: int = 0, turing_models: Sequence[str] = ("candidate",)) -> dict:
    """Write blind task files into ``out_dir`` and the key to ``key_path`` (default
    ``<out_dir>.key.json``, beside the folder). Returns counts per task and the two paths."""
    from charops.eval.rubric import load_rubric

    results, out = Path(results_dir), Path(out_dir)
    key_file = Path(key_path) if key_path is not None else out.with_name(out.name + ".key.json")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise DataError(f"export-human: unknown task '{unknown[0] if unknown else ''}' "
                        f"(tasks: {', '.join(TASKS)})")
    if not (results / "replies.jsonl").is_file():
        raise DataError(f"{results}: no replies.jsonl; run `charops eval run` first")
    out_r, res_r, key_r = out.resolve(), results.resolve(), key_file.resolve()
    if out_r == res_r or res_r in out_r.parents or out_r in res_r.parents:
        raise DataError(f"export-human: --out {out} overlaps the results directory {results}; "
                        "choose a folder outside it")
    if out_r in key_r.parents or key_r == out_r:
        raise DataError(f"export-human: the key file {key_file} must not be inside the task "
                        f"folder {out} (the folder is what annotators get)")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"export-human: {out} exists and is not empty; choose a new folder")
    if key_file.exists():
        raise DataError(f"export-human: key file {key_file} exists; move it away or choose --key")
    rub = load_rubric(rubric)
    dims = rub.keys

    replies = list(read_jsonl(results / "replies.jsonl"))
    by_id: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in replies:
        by_id[str(r["id"])][r.get("model") or "candidate"] = r
    ids = sorted(by_id)
    rng = random.Random(seed)
    rng.shuffle(ids)
    if max_items:
        ids = ids[:max_items]
    prompts = {i: {k: next(iter(by_id[i].values())).get(k) for k in ("character", "category", "topic")}
               for i in ids}
    key: dict[str, Any] = {"schema": KEY_SCHEMA, "results_dir": str(results), "rubric": rub.ident,
                           "rubric_name": rub.name, "scale": list(rub.scale), "dimensions": dims,
                           "seed": seed, "prompts": prompts, "tasks": {}}
    base = ("task", "task_id", "annotator", "character", "profile", "context")
    plans: dict[str, tuple[list[dict], list[str]]] = {}

    def numbered(task: str, items: list[tuple[dict, dict]]) -> list[dict]:
        rng.shuffle(items)
        rows, keyed = [], {}
        for n, (row, secret) in enumerate(items, 1):
            task_id = f"{task[:2].upper()}{n:04d}"
            rows.append({"task": task, "task_id": task_id, "annotator": "", **row})
            keyed[task_id] = secret
        key["tasks"][task] = keyed
        return rows

    def shown(rec: dict) -> dict:
        return {"character": rec.get("character") or "", "profile": _profile(rec),
                "context": _context(rec)}

    if "pointwise" in tasks:
        items = [({**shown(rec), "reply": rec.get("reply") or "", **{d: "" for d in dims}, "comment": ""},
                  {"id": i, "model": model}) for i in ids for model, rec in by_id[i].items()]
        plans["pointwise"] = (numbered("pointwise", items), [*base, "reply", *dims, "comment"])
    if "pairwise" in tasks:
        items = []
        for i in ids:
            if {"candidate", "baseline"} <= set(by_id[i]):
                pair = ["candidate", "baseline"]
                rng.shuffle(pair)
                items.append(({**shown(by_id[i][pair[0]]), "reply_1": by_id[i][pair[0]].get("reply") or "",
                               "reply_2": by_id[i][pair[1]].get("reply") or "", "preference": "",
                               "comment": ""}, {"id": i, "first": pair[0], "second": pair[1]}))
        plans["pairwise"] = (numbered("pairwise", items),
                             [*base, "reply_1", "reply_2", "preference", "comment"])
    if "turing" in tasks:
        items = []
        for i in ids:
            some = next(iter(by_id[i].values()))
            if some.get("reference"):
                items.append(({**shown(some), "reply": some["reference"], "author": "", "comment": ""},
                              {"id": i, "source": "human", "model": None}))
            for model in turing_models:
                if model in by_id[i]:
                    items.append(({**shown(by_id[i][model]), "reply": by_id[i][model].get("reply") or "",
                                   "author": "", "comment": ""},
                                  {"id": i, "source": "model", "model": model}))
        plans["turing"] = (numbered("turing", items), [*base, "reply", "author", "comment"])

    with atomic_dir(out, overwrite=True) as tmp:
        for task, (rows, columns) in plans.items():
            _write_task(tmp, task, rows, columns)
        write_text(tmp / "instructions.md", _instructions(rub, list(plans)))
        write_json(key_file, key)
    return {"out": str(out), "key": str(key_file),
            "counts": {task: len(rows) for task, (rows, _) in plans.items()}}


# ---------------------------------------------------------------------------------------------
# Import


def _read_annotations(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a filled-in CSV or JSONL task file."""
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file")
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
            return [(n, row) for n, row in enumerate(csv.DictReader(fh), 2)]
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
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


def read_ratings(key: dict, files: Sequence[str | Path]) -> dict[str, dict[str, dict[str, dict]]]:
    """{task: {annotator: {task_id: answer}}} from filled-in files, every value checked."""
    lo, hi = key["scale"]
    ratings: dict[str, dict[str, dict[str, dict]]] = {t: defaultdict(dict) for t in TASKS}
    for file in map(Path, files):
        for line, row in _read_annotations(file):
            where = f"{file}:{line}"
            task, task_id = str(row.get("task") or "").strip(), str(row.get("task_id") or "").strip()
            if task not in TASKS or task_id not in key["tasks"].get(task, {}):
                raise DataError(f"{where}: task '{task}' / task_id '{task_id}' is not in the key "
                                "file; import the files exported with this key")
            annotator = str(row.get("annotator") or "").strip() or file.stem
            if task == "pointwise":
                answer = {d: _score(row[d], lo, hi, f"{where}: field '{d}'")
                          for d in key["dimensions"] if not _blank(row.get(d))}
            elif task == "pairwise":
                answer = {} if _blank(row.get("preference")) else {"preference": PREFERENCE[
                    _choice(row["preference"], list(PREFERENCE), f"{where}: field 'preference'")]}
            else:
                answer = {} if _blank(row.get("author")) else {
                    "author": _choice(row["author"], AUTHORS, f"{where}: field 'author'")}
            if not answer:
                continue
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


def import_human(key_path: str | Path, files: Sequence[str | Path], out_dir: str | Path, *,
                 results_dir: str | Path | None = None) -> dict:
    """Read annotations against their key, write a results directory with the summary, the
    records and the reports; returns the summary. ``results_dir`` (default: the one the key
    names) supplies replies and automatic signals, when it is there."""
    from charops.eval.aggregate import summarize
    from charops.eval.report import write_reports

    key_file = Path(key_path)
    try:
        key = json.loads(key_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{key_file}: no such key file (export-human writes it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{key_file}: not valid JSON ({exc})") from None
    if not isinstance(key, dict) or key.get("schema") != KEY_SCHEMA:
        raise DataError(f"{key_file}: not a charops human-evaluation key (schema {KEY_SCHEMA})")
    if not files:
        raise DataError("import-human: give at least one filled-in annotation file")
    results = Path(results_dir or key["results_dir"])
    out = Path(out_dir)
    inputs = [key_file, *map(Path, files)]
    if out.resolve() == results.resolve() or any(out.resolve() in p.resolve().parents or
                                                 p.resolve() == out.resolve() for p in inputs):
        raise DataError(f"import-human: --out {out} would overwrite an input (the results "
                        "directory, the key or an annotation file); choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"import-human: {out} exists and is not empty; choose a new folder")

    ratings = read_ratings(key, files)
    if not ratings:
        raise DataError("import-human: the files hold no ratings (every answer cell is empty)")
    replies = list(read_jsonl(results / "replies.jsonl")) if (results / "replies.jsonl").is_file() else [
        {"id": i, "model": "candidate", **info} for i, info in key["prompts"].items()]
    original = {}
    if (results / "eval_summary.json").exists():
        original = read_eval_summary(results / "eval_summary.json")

    pointwise = _pointwise_records(key, ratings["pointwise"]) if "pointwise" in ratings else []
    pairwise = _pairwise_records(key, ratings["pairwise"]) if "pairwise" in ratings else []
    annotators = sorted({a for r in ratings.values() for a in r})
    scale = list(range(key["scale"][0], key["scale"][1] + 1))
    agree: dict[str, Any] = {}
    if "pointwise" in ratings:
        agree["pointwise"] = {d: agreement({a: {t: s[d] for t, s in r.items() if d in s}
                                            for a, r in ratings["pointwise"].items()}, "ordinal", scale)
                              for d in key["dimensions"]}
    if "pairwise" in ratings:
        agree["pairwise"] = agreement({a: {t: s["preference"] for t, s in r.items()}
                                       for a, r in ratings["pairwise"].items()}, "nominal",
                                      list(PREFERENCE.values()))
    if "turing" in ratings:
        agree["turing"] = agreement({a: {t: s["author"] for t, s in r.items()}
                                     for a, r in ratings["turing"].items()}, "nominal", AUTHORS)
    skipped = [f"{task}: no ratings imported" for task in TASKS if task not in ratings]
    if "pairwise" not in ratings:
        pairwise = []
    judge = {"kind": "human", "model": f"{len(annotators)} annotators", "rubric": key["rubric"],
             "annotators": len(annotators),
             "pointwise_aggregation": "mean of the annotators' scores per reply",
             "pairwise_aggregation": "majority of the annotators; an even split is a tie"}
    summary = summarize(replies, pointwise, pairwise, judge=judge,
                        automatic=original.get("automatic"), skipped=skipped,
                        candidate=original.get("candidate"), baseline=original.get("baseline"),
                        dimensions=key["dimensions"])
    summary["agreement"] = agree
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
