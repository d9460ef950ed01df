"""Evaluation reports: Markdown against a golden file, HTML safety, HTML in headless Chromium.

    .venv/bin/python -m pytest tests/unit/test_eval_report.py -x -q
    CHAROPS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_eval_report.py -k golden

The fixed result set (tests/unit/eval_fixtures/results) has six prompts over three character
categories and three topics, a candidate and a baseline, one empty reply left unjudged, and
replies carrying Markdown/HTML markup (`|`, `*`, `<script>`), Chinese text and a newline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from charops.errors import DataError
from charops.eval.report import (
    MARKDOWN_LIMIT,
    Results,
    headline_metrics,
    load_results,
    render_html,
    render_markdown,
    write_reports,
)

HERE = Path(__file__).parent
RESULTS = HERE / "eval_fixtures" / "results"
GOLDEN = HERE / "golden" / "eval_report.md"


@pytest.fixture()
def results() -> Results:
    return load_results(RESULTS)


def test_markdown_matches_the_golden_file(results):
    text = render_markdown(results)
    if os.environ.get("CHAROPS_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8"), \
        "report changed: check it, then CHAROPS_UPDATE_GOLDEN=1 to rewrite the golden file"


def test_markdown_tables_carry_the_numbers_and_the_judge(results):
    text = render_markdown(results)
    # Table 7 row of one category: n, win, tie, lose, Advantage, its CI, the sign test's p.
    summary = results.summary
    games = summary["pairwise"]["by_category"]["games & videos"]
    assert games["win"] == 0.0 and games["lose"] == 50.0  # the fixture's two pairs: tie, lose
    row = next(line for line in text.splitlines() if line.startswith(r"| games \& videos | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:7] == ["2", "0.0", "50.0", "50.0", "-50.0",
                          f"[{games['advantage_ci95'][0]:.1f}, {games['advantage_ci95'][1]:.1f}]"]
    assert cells[7] == f"{games['sign_test_p']:.3f}"
    # Every table section names the judge; the skipped part is stated.
    sections = re.split(r"\n(?=##+ )", text.split("## Sample replies")[0])[1:]
    tables = [s for s in sections if "| --- |" in s and "Automatic" not in s]
    # Pair-wise overall, per category, per topic; point-wise overall and, for each of the two
    # models, per category and per topic.
    assert len(tables) == 8
    assert all("Judge: reward model, model runs/reward/model, rubric characterglm-v1" in s
               for s in tables)
    assert "- point-wise: reply p6 of candidate is empty and was not scored" in text


def test_markdown_has_no_raw_html_and_escapes_markup(results):
    text = render_markdown(results)
    assert not re.search(r"(?<!\\)<", text), "raw HTML in Markdown (the Kubeflow UI shows it as text)"
    assert r"\<script\>alert('x')\</script\>" in text
    assert r"The '89 gale \| we lost the mast. Still here." in text  # one table cell, one line
    assert r"\*Because\*" in text


def test_markdown_stays_under_the_ui_limit_with_a_note(results):
    big = results.replies[0]
    replies = []
    for i in range(3000):  # 3000 prompts x 2 models x ~800 characters: far past 400k
        for model in ("candidate", "baseline"):
            replies.append({**big, "id": f"q{i}", "model": model, "reply": "海" * 2000})
    many = Results(results.summary, replies, [], [])
    text = render_markdown(many, max_samples=3000)
    assert len(text) <= MARKDOWN_LIMIT < 400_000
    shown = int(re.search(r"(\d+) of 3000 prompts shown", text).group(1))
    assert 0 < shown < 3000
    assert len(re.findall(r"^### \d+\. ", text, re.M)) == shown
    assert "past the ~400k characters the Kubeflow UI renders" in text
    assert "海" * 800 + " …\\[cut\\]" in text and "海" * 801 not in text


def test_skipped_parts_and_no_judge(results):
    summary = {**results.summary, "judge": {"kind": "none"}, "pointwise": None, "pairwise": None,
               "skipped": ["point-wise and pair-wise: no judge configured (judge=none)"]}
    text = render_markdown(Results(summary, results.replies))
    assert "## Pair-wise" not in text and "## Point-wise" not in text
    assert "| judge | no judge |" in text
    assert "- point-wise and pair-wise: no judge configured (judge=none)" in text
    assert "## Automatic signals" in text
    page = render_html(Results(summary, results.replies))
    assert "pairwise-category" not in page and "no judge configured" in page


def test_html_is_self_contained_and_escaped(results):
    page = render_html(results)
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Tell me a joke &lt;b&gt;now&lt;/b&gt;" in page
    for banned in ("src=", "href=", "base64", "url(", "@import", "<link", "<img"):
        assert banned not in page, banned
    # Only the SVG namespace may look like a URL.
    assert set(re.findall(r"https?://[^\s\"']+", page)) == {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in page
    assert page.count("(empty reply)") == 1  # p6's candidate reply
    assert "the reply with the higher reward wins" in page  # the reward model's verdict rule


def test_headline_metrics(results):
    s = results.summary
    head = headline_metrics(s)
    assert head["pairwise_advantage"] == 40.0 and head["pairwise_win"] == 60.0
    assert head["pairwise_sign_test_p"] == pytest.approx(0.625)
    assert head["pointwise_overall_candidate"] == pytest.approx(3.6)
    assert head["pointwise_overall_baseline"] == pytest.approx(3.0)
    assert head["loss"] == s["automatic"]["candidate"]["loss"]
    assert head["baseline_loss"] == s["automatic"]["baseline"]["loss"]
    assert "baseline_distinct_1" not in head
    assert all(isinstance(v, float) for v in head.values())


def test_write_reports_and_bad_input(tmp_path):
    shutil.copytree(RESULTS, tmp_path / "r")
    paths = write_reports(tmp_path / "r")
    assert paths["markdown"].read_text(encoding="utf-8") == GOLDEN.read_text(encoding="utf-8")
    assert paths["html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert json.loads(paths["headline"].read_text())["pairwise_n"] == 5.0

    with pytest.raises(DataError, match="no eval_summary.json"):
        load_results(tmp_path)
    (tmp_path / "r" / "eval_summary.json").write_text('{"schema": "other"}')
    with pytest.raises(DataError, match="schema is 'other'"):
        write_reports(tmp_path / "r")
    (tmp_path / "r" / "eval_summary.json").write_text("{not json")
    with pytest.raises(DataError, match="eval_summary.json: not valid JSON"):
        load_results(tmp_path / "r")
    # The old reports are still there, whole.
    assert paths["markdown"].read_text(encoding="utf-8") == GOLDEN.read_text(encoding="utf-8")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (scripts/setup.sh installs "
                                             "Debian's chromium where apt-get exists)")
def test_html_renders_in_headless_chromium(results, tmp_path):
    from PIL import Image, ImageStat

    page = tmp_path / "report.html"
    page.write_text(render_html(results), encoding="utf-8")
    flags = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1000,1400"]
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], check=True,
                   capture_output=True, timeout=120)
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout

    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 1400)
    # Not blank: many colours, and the win/lose bar colours are on screen.
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50
    pixels = {c for _, c in colours}
    assert (0x2F, 0x9E, 0x44) in pixels and (0xE0, 0x31, 0x31) in pixels
    assert max(ImageStat.Stat(image).stddev) > 20

    # The charts' elements exist in the DOM Chromium built: one win/tie/lose triple per row
    # (overall + 3 categories, overall + 3 topics), one score bar per model and dimension.
    for chart in ("pairwise-category", "pairwise-topic"):
        svg = re.search(rf'<svg class="chart {chart}".*?</svg>', dom, re.S).group(0)
        for part in ("win", "tie", "lose"):
            assert len(re.findall(rf'<rect class="bar {part}"', svg)) == 4
    svg = re.search(r'<svg class="chart pointwise".*?</svg>', dom, re.S).group(0)
    assert len(re.findall(r'<rect class="bar score candidate"', svg)) == 7
    assert len(re.findall(r'<rect class="bar score baseline"', svg)) == 7
    assert len(re.findall(r'<div class="pair">', dom)) == 6
    assert "<script" not in dom


def test_registry_metrics_in_the_register_step_shape(results):
    from charops.eval.report import registry_metrics

    m = registry_metrics(results.summary)
    auto = results.summary["automatic"]
    assert m["model"]["loss"] == auto["candidate"]["loss"]
    assert m["model"]["pointwise_overall"] == pytest.approx(3.6)
    assert m["model"]["pairwise_advantage"] == 40.0
    assert m["baseline"]["distinct_1"] == auto["baseline"]["distinct_1"]
    assert "pairwise_win" not in m["baseline"]
    assert m["loss_delta"] == pytest.approx(auto["candidate"]["loss"] - auto["baseline"]["loss"])


def test_more_models_get_their_rows_and_bradley_terry(results):
    """A third model (`others`): its own pair-wise row, point-wise row and Bradley-Terry scores."""
    many = _three_models(results)
    text = render_markdown(many)
    assert "| sft | runs/sft/model |" in text
    row = next(line for line in text.splitlines() if line.startswith("| sft | 5 |"))
    assert row.split("|")[3].strip() == "60.0"  # 3 wins of 5 judged
    assert "### Bradley-Terry scores (more than two models)" in text
    assert re.search(r"^\| sft \| 3\.00 \[", text, re.M)  # point-wise row of the third model
    assert "| loss | 2.1234 | 6.5000 | 3.0000 |" in text  # its automatic column
    page = render_html(many)
    assert page.count('class="bar score other"') == 7
    assert page.count('<div class="reply other">') == 6


def test_judge_line_states_calibration_and_token_counts():
    from charops.eval.report import judge_text

    judge = {"kind": "reward_model", "model": "runs/reward/model", "rubric": "reward-calibrated-v1",
             "dimensions": ["Overall"], "pair_accuracy": 0.8125, "tie_margin": 0.05,
             "calibration": {"chosen_mean": 0.5, "rejected_mean": -0.25}}
    assert judge_text(judge) == "reward model, model runs/reward/model, rubric reward-calibrated-v1"
    assert judge_text(judge, details=True) == (
        "reward model, model runs/reward/model, rubric reward-calibrated-v1, calibration "
        "(chosen_mean 0.500, rejected_mean -0.250), pair accuracy 0.812, tie margin 0.050")
    llm = {"kind": "openai", "model": "gpt-4o-mini", "rubric": "characterglm-v1",
           "usage": {"pairwise": {"prompt_tokens": 1200, "completion_tokens": 80}}}
    assert judge_text(llm, details=True).endswith(
        "usage (pairwise.completion_tokens 80, pairwise.prompt_tokens 1200)")
    assert judge_text({"kind": "none"}) == judge_text(None) == "no judge"


# ---------------------------------------------------------------------------------------------
# One section model, two renderers: the HTML page and the Markdown report show the same things.


def _markdown_outline(text: str) -> tuple[list[str], list[list[list[str]]]]:
    """(headings, tables before the sample replies) of a Markdown report, markup unescaped."""
    def plain(cell: str) -> str:
        return re.sub(r"\\(.)", r"\1", cell.strip())

    headings, tables, table = [], [], None
    for line in text.splitlines():
        if line.startswith("#"):
            headings.append(plain(line.lstrip("#")))
        if "Sample replies" in headings:
            continue
        if line.startswith("|"):
            cells = [plain(c) for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if set(cells) != {"---"}:
                table = table if table is not None else []
                table.append(cells)
        elif table is not None:
            tables.append(table)
            table = None
    return headings, tables


def _html_outline(page: str) -> tuple[list[str], list[list[list[str]]]]:
    """(h1-h3 headings, tables before the sample replies) of the HTML report, text unescaped."""
    from html.parser import HTMLParser

    class Outline(HTMLParser):
        def __init__(self):
            super().__init__()
            self.headings, self.tables, self.text, self.row = [], [], None, None

        def handle_starttag(self, tag, attrs):
            if tag in ("h1", "h2", "h3", "td", "th"):
                self.text = ""
            elif tag == "table" and "Sample replies" not in self.headings:
                self.tables.append([])
            elif tag == "tr":
                self.row = []

        def handle_data(self, data):
            if self.text is not None:
                self.text += data

        def handle_endtag(self, tag):
            if tag in ("h1", "h2", "h3"):
                self.headings.append(self.text.strip())
            elif tag in ("td", "th") and self.row is not None:
                self.row.append(self.text.strip())
            elif tag == "tr" and "Sample replies" not in self.headings:
                self.tables[-1].append(self.row)
            if tag in ("h1", "h2", "h3", "td", "th"):
                self.text = None

    outline = Outline()
    outline.feed(page)
    return outline.headings, outline.tables


def _three_models(results):
    from charops.eval.aggregate import summarize

    third = [{**r, "model": "sft", "reply": r["reply"] + "!"} for r in results.replies
             if r["model"] == "candidate"]
    point = results.pointwise + [{**p, "model": "sft"} for p in results.pointwise
                                 if p["model"] == "baseline"]
    pair = results.pairwise + [{"id": p["id"], "a": "candidate", "b": "sft", "verdict": v}
                               for p, v in zip(results.pairwise, ["win", "lose", "win", "win", "tie", None],
                                               strict=True)]
    s = results.summary
    summary = summarize(results.replies + third, point, pair, judge=s["judge"],
                        automatic={**s["automatic"], "others": {"sft": {"loss": 3.0}}}, skipped=[],
                        candidate=s["candidate"], baseline=s["baseline"],
                        others=[{"label": "sft", "model": "runs/sft/model"}], resamples=100)
    return Results(summary, results.replies + third, point, pair)


def test_html_and_markdown_show_the_same_sections_and_tables(results):
    many = _three_models(results)
    human = {**results.summary, "judge": {"kind": "human", "model": "2 annotators"},
             "agreement": {"pairwise": {"annotators": 2, "items": 5, "items_multiply_rated": 5,
                                        "percent_agreement": 80.0, "cohen_kappa": 0.6,
                                        "krippendorff_alpha_nominal": 0.61}},
             "turing": {"candidate": {"judgements": 4, "taken_for_human": 1, "taken_for_human_pct": 25.0}}}
    for res in (results, many, Results(human, results.replies, results.pointwise, results.pairwise)):
        md_headings, md_tables = _markdown_outline(render_markdown(res))
        html_headings, html_tables = _html_outline(render_html(res))
        assert md_headings == html_headings
        assert md_tables == html_tables
        assert len(md_tables) >= 10
    # What the HTML page lacked before the two renderers shared their sections.
    headings = _html_outline(render_html(many))[0]
    for title in ("Against the other models", "Bradley-Terry scores (more than two models)",
                  "Per character category: candidate", "Per dialogue topic: sft"):
        assert title in headings
    assert "Annotator agreement" in _html_outline(render_html(Results(human, results.replies)))[0]


def test_a_new_section_shows_in_both_reports(results, monkeypatch):
    """docs/evaluation.md, "Adding a report section": one builder, both formats."""
    from charops.eval import sections
    from charops.eval.sections import Callout, Paragraph, Section, Table

    def judge_strength(res):
        return [Section("Judge strength", [Callout("Warning:", ["judge <weak> | pair accuracy 0.55"]),
                                           Paragraph("Held-out pair accuracy of the judge."),
                                           Table(["judge", "pair accuracy"], [["rm", "0.55"]])])]

    monkeypatch.setattr(sections, "BUILDERS", [*sections.BUILDERS[:1], judge_strength, *sections.BUILDERS[1:]])
    text, page = render_markdown(results), render_html(results)
    assert _markdown_outline(text)[0][1] == _html_outline(page)[0][1] == "Judge strength"
    assert "- judge \\<weak\\> \\| pair accuracy 0.55" in text
    assert "<li>judge &lt;weak&gt; | pair accuracy 0.55</li>" in page
    assert ["rm", "0.55"] in _markdown_outline(text)[1][1] and ["rm", "0.55"] in _html_outline(page)[1][1]
