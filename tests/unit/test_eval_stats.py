"""Evaluation statistics and aggregation against hand-worked references (and scipy).

    .venv/bin/python -m pytest tests/unit/test_eval_stats.py -x -q
"""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from charops.eval import stats
from charops.eval.aggregate import SCHEMA, summarize
from charops.eval.stats import cohen_kappa, fleiss_kappa, krippendorff_alpha


def test_mean_ci_hand_worked():
    # mean 3, s = sqrt(2.5), t_{0.975,4} = 2.776445 (tables): half-width 2.776445 * sqrt(2.5)/sqrt(5)
    cell = stats.mean_ci([1, 2, 3, 4, 5])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert cell["mean"] == 3.0 and cell["n"] == 5
    assert cell["ci95"] == pytest.approx([3 - half, 3 + half], abs=1e-6)
    assert stats.mean_ci([4, 4, 4]) == {"mean": 4.0, "ci95": [4.0, 4.0], "n": 3}
    assert stats.mean_ci([2]) == {"mean": 2.0, "ci95": [2.0, 2.0], "n": 1}
    assert stats.mean_ci([]) == {"mean": None, "ci95": None, "n": 0}


@pytest.mark.parametrize("df", [1, 2, 3, 5, 12, 39, 300])
@pytest.mark.parametrize("q", [0.005, 0.05, 0.5, 0.9, 0.975])
def test_t_quantiles_match_scipy(df, q):
    assert stats.t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), abs=1e-6)


def test_sign_test_hand_worked():
    # 9 wins, 2 losses: 2 * (C(11,0) + C(11,1) + C(11,2)) / 2^11 = 2 * 67 / 2048
    assert stats.sign_test(9, 2) == 2 * 67 / 2048
    assert stats.sign_test(2, 9) == 2 * 67 / 2048
    assert stats.sign_test(10, 0) == 2 / 1024
    assert stats.sign_test(5, 5) == 1.0
    assert stats.sign_test(0, 0) == 1.0


@pytest.mark.parametrize("wins,losses", [(0, 1), (1, 0), (3, 4), (12, 3), (20, 20), (31, 17), (0, 40), (97, 80)])
def test_sign_test_matches_scipy_binomtest(wins, losses):
    expected = scipy_stats.binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue
    assert stats.sign_test(wins, losses) == pytest.approx(expected, rel=1e-9)


def test_swap_rule_disagreement_is_a_tie():
    assert stats.swap_rule("a", "a") == "win"
    assert stats.swap_rule("b", "b") == "lose"
    assert stats.swap_rule("tie", "tie") == "tie"
    assert stats.swap_rule("a", "b") == "tie"   # the judge preferred a position, not a reply
    assert stats.swap_rule("b", "tie") == "tie"
    assert stats.swap_rule("a", None) is None   # one order unjudged: the pair is unjudged
    assert stats.swap_rule(None, None) is None
    with pytest.raises(ValueError):
        stats.swap_rule("first", "a")


def test_pairwise_table_hand_worked():
    row = stats.pairwise_table(["win", "win", "tie", "lose", None], resamples=200)
    assert (row["win"], row["tie"], row["lose"], row["advantage"]) == (50.0, 25.0, 25.0, 25.0)
    assert (row["n"], row["unjudged"], row["wins"], row["ties"], row["losses"]) == (4, 1, 2, 1, 1)
    assert row["sign_test_p"] == 1.0  # 2 vs 1: 2 * (1 + 3) / 8 capped at 1
    lo, hi = row["advantage_ci95"]
    assert -100 <= lo <= 25 <= hi <= 100


def test_advantage_bootstrap_against_the_exact_resampling_distribution():
    # Outcomes [+1, +1, +1, -1]: a resample holds k ~ Bin(4, 1/4) losses, Advantage 100 - 50k.
    # P(k=4) = 0.0039, P(k>=3) = 0.0508 -> the 2.5th percentile is -50; P(k=0) = 0.316 -> the
    # 97.5th percentile is 100.
    assert stats.advantage_ci([1, 1, 1, -1], resamples=10000, seed=3) == [-50.0, 100.0]
    assert stats.advantage_ci([1] * 7, seed=1) == [100.0, 100.0]
    assert stats.advantage_ci([1, 0, -1, 1], seed=5) == stats.advantage_ci([1, 0, -1, 1], seed=5)
    assert stats.advantage_ci([]) is None


def test_bradley_terry_two_models_closed_form():
    # a beats b 3 times out of 4: P(a beats b) = 3/4 = 1/(1+exp(s_b - s_a)) -> s_a - s_b = ln 3
    recs = [("a", "b", "win")] * 3 + [("a", "b", "lose")]
    bt = stats.bradley_terry(recs, prior=0.0, resamples=50)
    s = bt["models"]
    assert s["a"]["score"] == pytest.approx(math.log(3) / 2, abs=1e-6)
    assert s["b"]["score"] == pytest.approx(-math.log(3) / 2, abs=1e-6)
    assert s["a"]["n"] == 4


def test_bradley_terry_three_models_solves_the_likelihood_equations():
    recs = ([("A", "B", "win")] * 2 + [("A", "B", "lose")] + [("B", "C", "win")] * 2
            + [("C", "B", "win")] + [("A", "C", "win"), ("A", "C", "lose"), ("A", "C", "tie")])
    bt = stats.bradley_terry(recs, prior=0.0, resamples=100, seed=2)
    s = {m: v["score"] for m, v in bt["models"].items()}
    # Maximum likelihood: each model's wins (ties half) equal its expected wins.
    wins = {"A": 2 + 1 + 0.5, "B": 1 + 2, "C": 1 + 1 + 0.5}
    games = {("A", "B"): 3, ("B", "C"): 3, ("A", "C"): 3}
    for m in s:
        expected = sum(n / (1 + math.exp(s[o] - s[m])) for (x, y), n in games.items()
                       for o in (y if x == m else x,) if m in (x, y))
        assert expected == pytest.approx(wins[m], abs=1e-6)
    assert sum(s.values()) == pytest.approx(0.0, abs=1e-9)
    assert s["A"] > s["B"] > s["C"]
    for v in bt["models"].values():
        assert v["ci95"][0] <= v["score"] <= v["ci95"][1]


def test_bradley_terry_prior_keeps_a_clean_sweep_finite():
    bt = stats.bradley_terry([("a", "b", "win")] * 5, prior=0.1, resamples=20)
    # (5 + 0.1) / 0.1 = 51 -> s_a - s_b = ln 51
    assert bt["models"]["a"]["score"] - bt["models"]["b"]["score"] == pytest.approx(math.log(51), abs=1e-6)


# --- summarize ------------------------------------------------------------------------------

def _replies():
    rows = []
    for pid, cat, topic in [("p1", "celebrity", "interview"), ("p2", "celebrity", "chit-chat"),
                            ("p3", "daily-life", "chit-chat"), ("p4", "daily-life", "love")]:
        for model in ("candidate", "baseline"):
            rows.append({"id": pid, "model": model, "category": cat, "topic": topic, "reply": "x"})
    return rows


def test_summarize_hand_worked():
    pointwise = [
        {"id": "p1", "model": "candidate", "scores": {"Overall": 4, "Safety": 5}},
        {"id": "p2", "model": "candidate", "scores": {"Overall": 2, "Safety": 5}},
        {"id": "p3", "model": "candidate", "scores": {"Overall": 3}},      # Safety not asked
        {"id": "p4", "model": "candidate", "scores": None, "error": "unparseable"},
        {"id": "p1", "model": "baseline", "scores": {"Overall": 1, "Safety": 4}},
    ]
    pairwise = [
        {"id": "p1", "a": "candidate", "b": "baseline", "verdict_ab": "a", "verdict_ba": "a", "verdict": "win"},
        {"id": "p2", "a": "candidate", "b": "baseline", "verdict_ab": "a", "verdict_ba": "b", "verdict": "tie"},
        # recorded from the baseline's side: a baseline loss is a candidate win
        {"id": "p3", "a": "baseline", "b": "candidate", "verdict_ab": "b", "verdict_ba": "b", "verdict": "lose"},
        {"id": "p4", "a": "candidate", "b": "baseline", "verdict_ab": None, "verdict_ba": "a", "verdict": None},
    ]
    s = summarize(_replies(), pointwise, pairwise,
                  judge={"kind": "openai", "model": "m", "rubric": "characterglm-v1"},
                  automatic=None, skipped=[], dimensions=["Safety", "Overall"],
                  candidate={"label": "candidate", "model": "runs/dpo/model"})
    assert s["schema"] == SCHEMA
    assert s["baseline"] == {"label": "baseline", "model": None}
    cand = s["pointwise"]["candidate"]
    assert s["pointwise"]["dimensions"] == ["Safety", "Overall"]
    assert cand["overall"]["Overall"]["mean"] == 3.0 and cand["overall"]["Overall"]["n"] == 3
    assert cand["overall"]["Safety"] == {"mean": 5.0, "ci95": [5.0, 5.0], "n": 2}
    assert cand["unjudged"] == 1 and cand["judged"] == 3
    assert cand["by_category"]["celebrity"]["Overall"]["mean"] == 3.0
    assert cand["by_category"]["daily-life"]["Overall"]["n"] == 1
    assert cand["by_category"]["daily-life"]["Safety"]["n"] == 0
    assert cand["by_topic"]["chit-chat"]["Overall"]["mean"] == 2.5
    assert s["pointwise"]["baseline"]["overall"]["Overall"]["mean"] == 1.0

    overall = s["pairwise"]["overall"]
    assert overall["n"] == 3 and overall["unjudged"] == 1
    assert overall["win"] == pytest.approx(200 / 3) and overall["tie"] == pytest.approx(100 / 3)
    assert overall["lose"] == 0.0 and overall["advantage"] == pytest.approx(200 / 3)
    assert overall["sign_test_p"] == 0.5  # 2 wins, 0 losses: 2 * 1/4
    assert s["pairwise"]["by_category"]["celebrity"]["win"] == 50.0
    assert s["pairwise"]["by_category"]["daily-life"]["win"] == 100.0
    assert s["pairwise"]["by_category"]["daily-life"]["unjudged"] == 1
    assert s["pairwise"]["by_topic"]["love"]["n"] == 0
    assert s["bradley_terry"] is None
    assert s["counts"] == {"prompts": 4, "replies": {"baseline": 4, "candidate": 4}}


def test_summarize_without_baseline_or_judge():
    replies = [r for r in _replies() if r["model"] == "candidate"]
    s = summarize(replies, [], [], judge={"kind": "none", "model": None, "rubric": None},
                  automatic={"candidate": {"empty_rate": 0.0}}, skipped=["pair-wise: no baseline given"])
    assert s["baseline"] is None and s["pointwise"] is None and s["pairwise"] is None
    assert s["skipped"] == ["pair-wise: no baseline given"]
    assert s["automatic"] == {"candidate": {"empty_rate": 0.0}}


def test_summarize_three_models_adds_bradley_terry():
    pairwise = ([{"id": f"p{i}", "a": "candidate", "b": "baseline", "verdict": "win"} for i in range(3)]
                + [{"id": f"p{i}", "a": "candidate", "b": "production", "verdict": "lose"} for i in range(2)]
                + [{"id": "p9", "a": "baseline", "b": "production", "verdict": "tie"}])
    s = summarize([], [], pairwise, judge={"kind": "human"}, automatic=None, skipped=[], resamples=50)
    assert set(s["bradley_terry"]["models"]) == {"candidate", "baseline", "production"}
    assert s["pairwise"]["overall"]["n"] == 3


# ---------------------------------------------------------------------------------------------
# Agreement against hand-worked and published values


def test_cohen_kappa_by_hand():
    # p_o = 3/4; each rater's label shares: a (1/2, 1/2), b (1/4, 3/4) -> p_e = 1/2*1/4 + 1/2*3/4
    # = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2.
    assert cohen_kappa([1, 1, 2, 2], [1, 2, 2, 2]) == pytest.approx(0.5)
    # Wikipedia's 50 proposals: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 1], [1, 1]) is None  # p_e = 1: undefined, not 0 or 1


def test_fleiss_kappa_published_example():
    # Fleiss (1971) as on Wikipedia: 10 items, 14 raters, 5 categories; P-bar 0.378, P_e 0.213.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)
    # By hand: 2 items, 3 raters, all agree on item 1 (cat A), split 2-1 on item 2:
    # P_1 = 1, P_2 = (4+1-3)/6 = 1/3, P-bar = 2/3; p_A = 5/6, p_B = 1/6, P_e = 26/36;
    # kappa = (2/3 - 26/36) / (10/36) = -0.2.
    assert fleiss_kappa([[3, 0], [2, 1]]) == pytest.approx(-0.2)
    with pytest.raises(ValueError):
        fleiss_kappa([[3, 0], [1, 1]])


def test_krippendorff_alpha_by_hand_and_published():
    # Two coders, three units (1,1) (2,2) (1,2): coincidences o11 = 2, o22 = 2, o12 = o21 = 1;
    # n_1 = n_2 = 3, n = 6; D_o = 2/6, D_e = 2*3*3 / (6*5) = 0.6; alpha = 1 - (1/3)/0.6 = 4/9.
    assert krippendorff_alpha([[1, 1], [2, 2], [1, 2]]) == pytest.approx(4 / 9)
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units,
    # missing values; published alpha nominal .743, ordinal .815, interval .849.
    n = None
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
            [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
    units = [list(col) for col in zip(*data, strict=True)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha([[1, n], [2, n]]) is None  # nothing pairable
