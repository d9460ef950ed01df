"""Statistics of the evaluation tables: confidence intervals, sign test, bootstrap, Bradley-Terry,
and the agreement of annotators (Cohen's and Fleiss' kappa, Krippendorff's alpha).

Pure Python + numpy (no scipy at run time; the tests check these against scipy)::

    from charops.eval import stats
    stats.mean_ci([4, 5, 3, 4])                 # {"mean": 4.0, "ci95": [2.70, 5.30], "n": 4}
    stats.sign_test(wins=9, losses=2)           # 0.0654 (exact two-sided binomial, p = 1/2)
    stats.swap_rule("a", "tie")                 # "tie": the two orders disagree
    stats.advantage_ci([1, 1, 0, -1], seed=0)   # paired bootstrap 95% interval, percentage points
    stats.bradley_terry([("m1", "m2", "win"), ...])
    stats.cohen_kappa([1, 1, 2, 2], [1, 2, 2, 2])   # 0.5
    stats.krippendorff_alpha([[1, 1], [2, 2], [1, 2]], "nominal")   # 4/9, missing ratings allowed

Conventions: an *outcome* of a pair is +1 (the first model wins), 0 (tie) or -1 (it loses);
percentages are 0-100.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

OUTCOME = {"win": 1, "tie": 0, "lose": -1}


# ---------------------------------------------------------------------------------------------
# Point-wise: mean and Student-t confidence interval


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(ln)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (bisection on :func:`t_cdf`; within 1e-6 of scipy's)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > q:
        lo *= 2.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> dict:
    """Mean and Student-t confidence interval of ``values``: ``{"mean", "ci95", "n"}``.

    The interval is mean +- t_{(1+c)/2, n-1} * s / sqrt(n) (s: sample standard deviation). With
    one value the interval is that value; with none, mean and interval are None.
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "ci95": [mean, mean], "n": 1}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_ppf((1.0 + confidence) / 2.0, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


# ---------------------------------------------------------------------------------------------
# Pair-wise: position-swap rule, win/tie/lose, sign test, bootstrap


def swap_rule(verdict_ab: str | None, verdict_ba: str | None) -> str | None:
    """Combine the verdicts of the two presentation orders into ``win|tie|lose`` for model a.

    Both verdicts name the *model* judged better (``"a"``, ``"b"`` or ``"tie"``), already mapped
    back from the position it was shown in. Two verdicts that disagree are a tie (MT-Bench's
    rule: the judge preferred a position, not a reply). If either order is unjudged (None) the
    pair is unjudged: it is counted, never scored.
    """
    for v in (verdict_ab, verdict_ba):
        if v not in ("a", "b", "tie", None):
            raise ValueError(f"verdict must be 'a', 'b', 'tie' or None, got {v!r}")
    if verdict_ab is None or verdict_ba is None:
        return None
    if verdict_ab != verdict_ba:
        return "tie"
    return {"a": "win", "b": "lose", "tie": "tie"}[verdict_ab]


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test of wins vs. losses (ties excluded), H0: P(win) = 1/2.

    p = sum of P(K = k) over every k no more likely than the observed count, K ~ Bin(n, 1/2);
    for p = 1/2 this is min(1, 2 * P(K <= min(wins, losses))). Exact rational arithmetic, so no
    rounding for large n. No decided pair: p = 1.
    """
    if wins < 0 or losses < 0:
        raise ValueError("wins and losses must be non-negative")
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def win_tie_lose(outcomes: Sequence[int]) -> dict:
    """``{"win", "tie", "lose", "advantage"}`` in percent of ``outcomes`` (+1/0/-1)."""
    n = len(outcomes)
    if n == 0:
        return {"win": None, "tie": None, "lose": None, "advantage": None}
    w = sum(1 for o in outcomes if o > 0)
    lo = sum(1 for o in outcomes if o < 0)
    win, lose = 100.0 * w / n, 100.0 * lo / n
    return {"win": win, "tie": 100.0 * (n - w - lo) / n, "lose": lose, "advantage": win - lose}


def advantage_ci(outcomes: Sequence[int], *, resamples: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> list[float] | None:
    """Paired bootstrap interval of Advantage (win % - lose %), in percentage points.

    Each outcome is one prompt's paired comparison (candidate and baseline replied to the same
    prompt), so prompts are resampled with replacement and Advantage recomputed; the interval is
    the (1-c)/2 and (1+c)/2 percentiles of ``resamples`` replicates (numpy's linear percentile).
    Seeded: the same outcomes and seed give the same interval.
    """
    x = np.asarray(outcomes, dtype=np.float64)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    # Advantage = 100 * (wins - losses) / n = 100 * mean(outcome) with outcomes in {-1, 0, 1}.
    reps = 100.0 * x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(reps, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def pairwise_table(verdicts: Sequence[str | None], *, resamples: int = 2000, seed: int = 0) -> dict:
    """The pair-wise row of one slice: win/tie/lose %, Advantage, n, unjudged, sign-test p and the
    bootstrap interval of Advantage. ``verdicts`` are ``win|tie|lose|None`` (None: unjudged)."""
    outcomes = [OUTCOME[v] for v in verdicts if v is not None]
    row = win_tie_lose(outcomes)
    wins = sum(1 for o in outcomes if o > 0)
    losses = sum(1 for o in outcomes if o < 0)
    row.update(n=len(outcomes), unjudged=sum(1 for v in verdicts if v is None),
               wins=wins, ties=len(outcomes) - wins - losses, losses=losses,
               sign_test_p=sign_test(wins, losses) if outcomes else None,
               advantage_ci95=advantage_ci(outcomes, resamples=resamples, seed=seed))
    return row


# ---------------------------------------------------------------------------------------------
# More than two models: Bradley-Terry


def _bt_fit(models: list[str], wins: np.ndarray, prior: float, iters: int = 10000,
            tol: float = 1e-12) -> np.ndarray:
    """MM algorithm (Hunter 2004) for Bradley-Terry strengths; returns log-strengths, mean 0.

    ``wins[i, j]`` is how often i beat j (a tie counts half to each). ``prior`` adds that many
    virtual wins each way between every two models that met, which keeps a model that won (or
    lost) everything at a finite score.
    """
    met = (wins + wins.T) > 0
    w = wins + prior * met
    n = w + w.T
    total = w.sum(axis=1)
    p = np.ones(len(models))
    for _ in range(iters):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1.0), p)
        new = np.where(new > 0, new, 1e-300)
        new /= np.exp(np.log(new).mean())
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    logp = np.log(p)
    return logp - logp.mean()


def _win_matrix(models: list[str], records: Sequence[tuple[str, str, str]]) -> np.ndarray:
    index = {m: i for i, m in enumerate(models)}
    wins = np.zeros((len(models), len(models)))
    for a, b, verdict in records:
        i, j = index[a], index[b]
        if verdict == "win":
            wins[i, j] += 1
        elif verdict == "lose":
            wins[j, i] += 1
        elif verdict == "tie":
            wins[i, j] += 0.5
            wins[j, i] += 0.5
    return wins


def bradley_terry(records: Iterable[tuple[str, str, str | None]], *, prior: float = 0.1,
                  resamples: int = 500, seed: int = 0, confidence: float = 0.95) -> dict:
    """Bradley-Terry scores of every model in ``records`` ((a, b, verdict-for-a) triples).

    Scores are log-strengths centred on 0: P(i beats j) = 1 / (1 + exp(s_j - s_i)). Intervals
    come from resampling the judged comparisons with replacement (seeded) and refitting. Returns
    ``{"scale": ..., "prior": ..., "models": {name: {"score", "ci95", "n"}}}``; unjudged
    comparisons (verdict None) are left out.
    """
    judged = [(a, b, v) for a, b, v in records if v is not None]
    models = sorted({m for a, b, _ in judged for m in (a, b)})
    if len(models) < 2:
        return {"scale": "log-strength, mean 0", "prior": prior, "models": {}}
    scores = _bt_fit(models, _win_matrix(models, judged), prior)
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(resamples):
        pick = rng.integers(0, len(judged), size=len(judged))
        reps.append(_bt_fit(models, _win_matrix(models, [judged[k] for k in pick]), prior))
    reps_arr = np.asarray(reps)
    alpha = (1.0 - confidence) / 2.0
    lo = np.percentile(reps_arr, 100 * alpha, axis=0)
    hi = np.percentile(reps_arr, 100 * (1 - alpha), axis=0)
    counts = {m: sum(1 for a, b, _ in judged if m in (a, b)) for m in models}
    return {"scale": "log-strength, mean 0", "prior": prior,
            "models": {m: {"score": float(scores[i]), "ci95": [float(lo[i]), float(hi[i])], "n": counts[m]}
                       for i, m in enumerate(models)}}


# ---------------------------------------------------------------------------------------------
# Agreement between annotators (people as the judge, charops.eval.human)


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
