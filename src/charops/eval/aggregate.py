"""From eval records to ``eval_summary.json`` (schema ``charops.eval_summary/v1``, docs/evaluation.md).

Any judge's records go through the same function: the LLM judge's, the reward model's and the
people's (``charops eval import-human``)::

    from charops.eval.aggregate import summarize
    summary = summarize(replies, pointwise, pairwise,
                        judge={"kind": "openai", "model": "gpt-4o", "rubric": "characterglm-v1"},
                        automatic={"candidate": {...}, "baseline": {...}},
                        skipped=["pair-wise: no baseline given"],
                        candidate={"label": "candidate", "model": "runs/dpo/model"},
                        baseline={"label": "baseline", "model": "runs/base"})

Records (one dict each, as in the results directory):

- ``replies``: ``{"id", "model" (label), "character", "category", "topic", ...}``; the id is the
  prompt's, shared by every model's reply to it, and gives each score its category and topic;
- ``pointwise``: ``{"id", "model", "scores": {dimension: int} | None, ...}``; ``scores`` None
  (the judge failed on it) is counted as unjudged, never scored; a dimension missing from
  ``scores`` was not asked (CharacterEval scores each example on its own subset);
- ``pairwise``: ``{"id", "a", "b", "verdict": "win|tie|lose" | None, ...}``, the verdict from
  ``a``'s side after the position-swap rule (:func:`charops.eval.stats.swap_rule`).

Point-wise cells are ``{"mean", "ci95", "n"}`` (Student-t 95% interval); pair-wise rows are
:func:`charops.eval.stats.pairwise_table` (percentages 0-100, Advantage = win - lose, exact sign
test, paired bootstrap interval). With more than two models in ``pairwise``, Bradley-Terry
scores with bootstrap intervals are added under ``bradley_terry``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from charops.eval import stats
from charops.eval.summary import SCHEMA  # the one version, written here and read there

SLICES = ("category", "topic")


def slices_of(replies: Iterable[dict]) -> dict[str, dict[str, str]]:
    """Prompt id -> {"category": ..., "topic": ...} (missing ones are "other")."""
    out: dict[str, dict[str, str]] = {}
    for r in replies:
        out.setdefault(r["id"], {k: r.get(k) or "other" for k in SLICES})
    return out


def _dimensions(pointwise: list[dict], given: list[str] | None) -> list[str]:
    if given:
        return list(given)
    seen: dict[str, None] = {}
    for rec in pointwise:
        for dim in rec.get("scores") or {}:
            seen.setdefault(dim, None)
    return list(seen)


def pointwise_block(records: list[dict], dims: list[str], where: dict[str, dict[str, str]]) -> dict:
    """Mean and CI per dimension, overall and per category and topic, for one model."""
    overall: dict[str, list[float]] = defaultdict(list)
    sliced: dict[str, dict[str, dict[str, list[float]]]] = {
        k: defaultdict(lambda: defaultdict(list)) for k in SLICES}
    unjudged = 0
    for rec in records:
        scores = rec.get("scores")
        if scores is None:
            unjudged += 1
            continue
        info = where.get(rec["id"], {k: "other" for k in SLICES})
        for dim, value in scores.items():
            if value is None:
                continue
            overall[dim].append(value)
            for k in SLICES:
                sliced[k][info[k]][dim].append(value)

    def cells(values: dict[str, list[float]]) -> dict:
        return {d: stats.mean_ci(values.get(d, [])) for d in dims}

    return {"overall": cells(overall),
            **{f"by_{k}": {name: cells(v) for name, v in sorted(sliced[k].items())} for k in SLICES},
            "judged": sum(1 for r in records if r.get("scores") is not None), "unjudged": unjudged}


def pairwise_block(records: list[dict], cand: str, base: str, where: dict[str, dict[str, str]],
                    resamples: int, seed: int) -> dict | None:
    flip = {"win": "lose", "lose": "win", "tie": "tie", None: None}
    verdicts: list[tuple[str, str | None]] = []
    for rec in records:
        if (rec["a"], rec["b"]) == (cand, base):
            verdicts.append((rec["id"], rec.get("verdict")))
        elif (rec["a"], rec["b"]) == (base, cand):
            verdicts.append((rec["id"], flip[rec.get("verdict")]))
    if not verdicts:
        return None
    groups: dict[str, dict[str, list]] = {k: defaultdict(list) for k in SLICES}
    for pid, v in verdicts:
        info = where.get(pid, {k: "other" for k in SLICES})
        for k in SLICES:
            groups[k][info[k]].append(v)
    def table(vs: list) -> dict:
        return stats.pairwise_table(vs, resamples=resamples, seed=seed)

    return {"a": cand, "b": base, "overall": table([v for _, v in verdicts]),
            **{f"by_{k}": {name: table(vs) for name, vs in sorted(groups[k].items())} for k in SLICES}}


def summarize(replies: Iterable[dict], pointwise: Iterable[dict], pairwise: Iterable[dict], *,
              judge: dict, automatic: dict | None, skipped: list[str],
              candidate: dict | None = None, baseline: dict | None = None, others: list[dict] | None = None,
              dimensions: list[str] | None = None, resamples: int = 2000, seed: int = 0) -> dict:
    """The eval summary dict (``charops.eval_summary/v1``) of one evaluation.

    ``candidate`` / ``baseline`` are ``{"label", "model"}``; by default the labels are
    ``"candidate"`` and ``"baseline"`` (the latter only if some record names it). ``judge`` is
    copied as given (kind, model, rubric and whatever the judge reports: tokens, calibration,
    held-out pair accuracy). ``others`` (``[{"label", "model"}]``) are further models compared with
    the candidate: each gets its own pair-wise block under ``pairwise_others`` and, with any of
    them, Bradley-Terry scores cover every model. ``dimensions`` fixes the point-wise dimensions and their order
    (default: the rubric's, as met in the records). ``seed`` and ``resamples`` drive the
    bootstrap intervals.
    """
    replies, pointwise, pairwise = list(replies), list(pointwise), list(pairwise)
    candidate = dict(candidate or {"label": "candidate", "model": None})
    labels = {r.get("model") for r in replies} | {r.get("model") for r in pointwise} \
        | {m for r in pairwise for m in (r.get("a"), r.get("b"))}
    if baseline is None and "baseline" in labels:
        baseline = {"label": "baseline", "model": None}
    where = slices_of(replies)
    dims = _dimensions(pointwise, dimensions or judge.get("dimensions"))

    point: dict | None = None
    if pointwise:
        point = {"dimensions": dims}
        for role, info in (("candidate", candidate), ("baseline", baseline)):
            recs = [r for r in pointwise if info is not None and r.get("model") == info["label"]]
            point[role] = pointwise_block(recs, dims, where) if recs else None
        if others:
            point["others"] = {o["label"]: pointwise_block(recs, dims, where) for o in others
                               if (recs := [r for r in pointwise if r.get("model") == o["label"]])}

    pair = None
    if baseline is not None and pairwise:
        pair = pairwise_block(pairwise, candidate["label"], baseline["label"], where, resamples, seed)

    pair_others = {o["label"]: pairwise_block(pairwise, candidate["label"], o["label"], where, resamples, seed)
                   for o in others or []} or None

    triples = [(r["a"], r["b"], r.get("verdict")) for r in pairwise]
    models_compared = {m for a, b, _ in triples for m in (a, b)}
    bt = stats.bradley_terry(triples, resamples=min(resamples, 500), seed=seed) \
        if len(models_compared) > 2 else None

    counts = {"prompts": len(where),
              "replies": {label: sum(1 for r in replies if r.get("model") == label)
                          for label in sorted({r.get("model") for r in replies})}}
    return {"schema": SCHEMA, "candidate": candidate, "baseline": baseline, "judge": dict(judge),
            "others": list(others or []), "automatic": automatic, "pointwise": point, "pairwise": pair,
            "pairwise_others": pair_others, "bradley_terry": bt,
            "counts": counts, "skipped": list(skipped)}
