"""The numbers an evaluation hands on: the KFP ``Metrics`` artifact and the registry entry.

    from charops.eval.metrics import headline_metrics, registry_metrics
    from charops.eval.summary import read_eval_summary
    summary = read_eval_summary("runs/eval/eval_summary.json")
    headline_metrics(summary)   # -> headline.json: pairwise_win, pointwise_overall_candidate, loss, ...
    registry_metrics(summary)   # -> metrics.json: {"model": {...}, "baseline": {...}, "loss_delta"}
"""

from __future__ import annotations

import math


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def headline_metrics(summary: dict) -> dict[str, float]:
    """The scalars for the KFP ``Metrics`` artifact: overall pair-wise result, each model's
    point-wise Overall mean, the candidate's automatic signals (baseline loss too) and, with a
    multi-turn evaluation, its conversation-level result, memory recall and boundary score."""
    out: dict[str, float] = {}
    pair = (summary.get("pairwise") or {}).get("overall") or {}
    for key in ("win", "tie", "lose", "advantage", "sign_test_p", "n"):
        if isinstance(pair.get(key), (int, float)):
            out[f"pairwise_{key}"] = float(pair[key])
    point = summary.get("pointwise") or {}
    for side in ("candidate", "baseline"):
        overall = ((point.get(side) or {}).get("overall") or {}).get("Overall") or {}
        if isinstance(overall.get("mean"), (int, float)):
            out[f"pointwise_overall_{side}"] = float(overall["mean"])
    auto = summary.get("automatic") or {}
    for side, prefix in (("candidate", ""), ("baseline", "baseline_")):
        for key, value in sorted((auto.get(side) or {}).items()):
            if _finite(value) and (side == "candidate" or key == "loss"):
                out[f"{prefix}{key}"] = float(value)
    if "loss" in out and "baseline_loss" in out:
        out["loss_delta"] = out["loss"] - out["baseline_loss"]
    mt = summary.get("multiturn") or {}
    conv = (mt.get("pairwise") or {}).get("overall") or {}
    for key in ("win", "tie", "lose", "advantage", "sign_test_p", "n"):
        if _finite(conv.get(key)):
            out[f"multiturn_{key}"] = float(conv[key])
    cand = (mt.get("models") or ["candidate"])[0]
    for block, name in (("memory", "memory_recall"), ("boundary", "boundary_score")):
        rate = ((mt.get(block) or {}).get(cand) or {}).get("rate")
        if _finite(rate):
            out[f"multiturn_{name}"] = float(rate)
    return out


def registry_metrics(summary: dict) -> dict:
    """``metrics.json`` of a results directory, in the shape the ``register`` step files under
    the registry entry (``model.*``, ``baseline.*``, ``loss_delta``): each model's automatic
    scalars and point-wise Overall mean, the candidate's pair-wise result."""
    head = headline_metrics(summary)
    auto = summary.get("automatic") or {}
    out: dict = {}
    for side, key in (("candidate", "model"), ("baseline", "baseline")):
        numbers = {k: v for k, v in (auto.get(side) or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if f"pointwise_overall_{side}" in head:
            numbers["pointwise_overall"] = head[f"pointwise_overall_{side}"]
        if side == "candidate":
            numbers.update({k: v for k, v in head.items() if k.startswith("pairwise_")})
        if numbers:
            out[key] = numbers
    if "loss" in out.get("model", {}) and "loss" in out.get("baseline", {}):
        out["loss_delta"] = out["model"]["loss"] - out["baseline"]["loss"]
    return out
