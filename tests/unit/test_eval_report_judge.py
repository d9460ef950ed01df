"""The reports say how far a reward-model judge can be trusted (issue 15): its held-out pair
accuracy next to every verdict table, a plain warning below 65%, and the CharacterGLM
dimensions it does not score named as such.

    .venv/bin/python -m pytest tests/unit/test_eval_report_judge.py -x -q
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from charops.eval.report import Results, load_results, render_html, render_markdown

RESULTS = Path(__file__).parent / "eval_fixtures" / "results"


def _reward_judged(accuracy: float) -> Results:
    """The fixture's results as the reward-model judge gives them: Overall only, its accuracy."""
    base = load_results(RESULTS)
    summary = copy.deepcopy(base.summary)
    summary["judge"] = {"kind": "reward_model", "model": "runs/reward/model", "rubric": "reward-calibrated-v1",
                        "pair_accuracy": accuracy, "pairs": 20, "dimensions": ["Overall"],
                        "pointwise_note": "Overall only: a reward model gives one number per reply"}
    point = summary["pointwise"]
    point["dimensions"] = ["Overall"]
    for side in ("candidate", "baseline"):
        block = point[side]
        for key in ("overall",):
            block[key] = {"Overall": block[key]["Overall"]}
        for key in ("by_category", "by_topic"):
            block[key] = {k: {"Overall": v["Overall"]} for k, v in (block.get(key) or {}).items()}
    return Results(summary, base.replies)


def test_every_verdict_table_carries_the_judges_accuracy(tmp_path):
    text = render_markdown(_reward_judged(0.85))
    pair_sections = [s for s in re.split(r"\n(?=##+ )", text) if "| --- |" in s and "Win %" in s]
    assert len(pair_sections) == 3  # overall, per category, per topic
    assert all("held-out pair accuracy 85% on 20 pairs." in s for s in pair_sections)
    assert "too weak" not in text.lower()
    assert ("Not scored by this judge: Consistency, Human-likeness, Engagement, Quality, Safety, "
            "Correctness (Overall only: a reward model gives one number per reply).") in text


@pytest.mark.parametrize("render", [render_markdown, render_html])
def test_a_judge_below_65_percent_is_called_too_weak(render):
    weak = render(_reward_judged(0.6))
    assert "The judge is too weak to trust" in weak
    assert "held-out pair accuracy 60% on 20 pairs (too weak to trust)" in weak
    assert "The judge is too weak to trust" not in render(_reward_judged(0.65))
