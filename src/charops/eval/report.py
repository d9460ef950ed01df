"""Evaluation reports: Markdown for the Kubeflow UI, a self-contained HTML page, headline numbers.

Everything is rendered from an eval results directory (``eval_summary.json`` plus the records
``replies.jsonl``, ``pointwise.jsonl``, ``pairwise.jsonl`` the eval stage writes), so a report
can be redone without generating or judging again::

    charops eval report runs/eval        # -> report.md, report.html, headline.json, metrics.json
    python -c "from charops.eval.report import write_reports; write_reports('runs/eval')"

- ``report.md`` is laid out like CharacterGLM's tables: Table 4 (point-wise mean and 95% CI per
  dimension and model), Tables 7 and 8 (pair-wise win/tie/lose %, Advantage = win - lose, the
  sign test's p and the bootstrap interval of Advantage, per character category and dialogue
  topic). Every table names the judge that produced it; skipped parts are stated with their
  reason. The Kubeflow UI cuts Markdown past ~400k characters and shows raw HTML in Markdown as
  text, so the page holds no HTML and sample replies are cut to fit (with a note saying so).
- ``report.html`` is for the UI's HTML artifact viewer (a sandboxed iframe): inline SVG charts
  (stacked win/tie/lose bars per category and topic, point-wise scores per dimension with CI
  whiskers) and sample replies side by side; no script, no external font or stylesheet, no
  base64 image (the iframe shows none of those), and a Content-Security-Policy that forbids
  them. All text from models, datasets and judges is escaped.
- ``headline.json``: the few scalars the KFP ``Metrics`` artifact shows; ``metrics.json``: the
  numbers the ``register`` step files with the registry entry (``model.*``, ``baseline.*``).
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charops.errors import DataError
from charops.io import read_jsonl, write_json, write_text

SUMMARY_SCHEMA = "charops.eval_summary/v1"
# The Kubeflow UI truncates Markdown past ~400k characters; stay clearly below.
MARKDOWN_LIMIT = 380_000
# A reply longer than this is cut in the reports (the full text stays in replies.jsonl).
REPLY_CHARS = 800
DEFAULT_SAMPLES = 40

JUDGE_NAMES = {"reward_model": "reward model", "openai": "LLM judge (OpenAI-compatible endpoint)",
               "human": "people (human annotation)", "none": "none"}


# How each judge reaches a pair-wise verdict, stated above the tables.
VERDICT_RULE = {
    "openai": "each pair is judged in both orders and two verdicts that disagree count as a tie. ",
    "reward_model": "the reply with the higher reward wins; a difference within the tie margin is a "
                    "tie. ",
    "human": "the annotators' majority wins; an even split is a tie. ",
}


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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSONL ({exc}); re-run `charops eval run`") from None


def load_results(results_dir: str | Path) -> Results:
    """Read ``eval_summary.json`` (required) and whichever record files exist."""
    root = Path(results_dir)
    path = root / "eval_summary.json"
    if not path.is_file():
        raise DataError(f"{root}: no eval_summary.json; point at the results directory of "
                        "`charops eval run` (or the evaluate step's `results` artifact)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(summary, dict) or summary.get("schema") != SUMMARY_SCHEMA:
        found = summary.get("schema") if isinstance(summary, dict) else type(summary).__name__
        raise DataError(f"{path}: schema is {found!r}, expected {SUMMARY_SCHEMA!r}")
    return Results(summary, _records(root / "replies.jsonl"), _records(root / "pointwise.jsonl"),
                   _records(root / "pairwise.jsonl"))


# ---------------------------------------------------------------------------------------------
# Numbers as text


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):  # counts stay counts
        return str(value)
    return f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return _num(value, 1)


def _signed(value: Any) -> str:
    return "–" if value is None else f"{value:+.1f}"


def _ci(ci: Any, digits: int = 2) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "–"
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _p(value: Any) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def judge_text(judge: dict | None, details: bool = False) -> str:
    """One line naming the judge: kind, model, rubric and, with ``details``, whatever else the
    judge stage recorded (a reward model's calibration and held-out pair accuracy, ...)."""
    if not judge or judge.get("kind") in (None, "none"):
        return "no judge"
    parts = [JUDGE_NAMES.get(judge["kind"], str(judge["kind"]))]
    if judge.get("model"):
        parts.append(f"model {judge['model']}")
    if judge.get("rubric"):
        parts.append(f"rubric {judge['rubric']}")
    for key in sorted(judge) if details else ():
        value = judge[key]
        if key in ("kind", "model", "rubric") or isinstance(value, list) or value is None:
            continue
        if isinstance(value, dict):  # a reward model's calibration, an LLM judge's token counts
            leaves = _leaves(value)
            if leaves:
                parts.append(f"{key.replace('_', ' ')} (" + ", ".join(
                    f"{k} {_num(v, 3) if isinstance(v, float) else v}" for k, v in leaves) + ")")
            continue
        parts.append(f"{key.replace('_', ' ')} {_num(value, 3) if isinstance(value, float) else value}")
    return ", ".join(parts)


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar leaves of a nested dict as (dotted key, value), in key order."""
    out: list[tuple[str, Any]] = []
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        elif value is not None and not isinstance(value, list):
            out.append((f"{prefix}{key}", value))
    return out


def headline_metrics(summary: dict) -> dict[str, float]:
    """The scalars for the KFP ``Metrics`` artifact: overall pair-wise result, each model's
    point-wise Overall mean, and the candidate's automatic signals (baseline loss too)."""
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
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value) and (side == "candidate" or key == "loss"):
                out[f"{prefix}{key}"] = float(value)
    if "loss" in out and "baseline_loss" in out:
        out["loss_delta"] = out["loss"] - out["baseline_loss"]
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


# ---------------------------------------------------------------------------------------------
# Samples: one prompt with each model's reply, its verdict and scores


@dataclass
class Sample:
    id: str
    character: str
    category: str
    topic: str
    context: list[dict]
    reference: str | None
    replies: dict[str, str]              # model label -> reply
    scores: dict[str, dict]              # model label -> {dim: score}
    verdict: str | None                  # candidate's side: win | tie | lose


def samples(results: Results) -> list[Sample]:
    """The prompts in ``replies.jsonl`` order, each with every model's reply (by label)."""
    cand = results.summary["candidate"]["label"]
    base = (results.summary.get("baseline") or {}).get("label")
    by_id: dict[str, Sample] = {}
    for r in results.replies:
        sample = by_id.get(r["id"])
        if sample is None:
            sample = by_id[r["id"]] = Sample(
                str(r["id"]), r.get("character") or "", r.get("category") or "",
                r.get("topic") or "", r.get("messages") or [], r.get("reference"), {}, {}, None)
        sample.replies[r.get("model") or cand] = r.get("reply") or ""
    for p in results.pointwise:
        if p.get("id") in by_id and p.get("scores"):
            by_id[p["id"]].scores[p.get("model") or cand] = p["scores"]
    for p in results.pairwise:
        if p.get("id") in by_id and p.get("verdict") and {p.get("a"), p.get("b")} == {cand, base}:
            # Verdicts are from `a`'s side; the reports show the candidate's against the baseline.
            flip = {"win": "lose", "lose": "win", "tie": "tie"}
            by_id[p["id"]].verdict = p["verdict"] if p.get("a") == cand else flip[p["verdict"]]
    return list(by_id.values())


def _cut(text: str, limit: int = REPLY_CHARS) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " …[cut]"


def _last_user(context: list[dict]) -> str:
    return next((m.get("content") or "" for m in reversed(context) if m.get("role") == "user"), "")


def _model_refs(summary: dict) -> list[dict]:
    """``{"label", "model"}`` of the candidate, the baseline and any other model."""
    return [summary["candidate"], *([summary["baseline"]] if summary.get("baseline") else []),
            *(summary.get("others") or [])]


def _models(summary: dict) -> list[tuple[str, str, dict | None]]:
    """(role, label, point-wise block or None) of every model, in report order: the candidate,
    the baseline, then any other model compared with the candidate (role ``other``)."""
    point = summary.get("pointwise") or {}
    out = [("candidate", summary["candidate"]["label"], point.get("candidate"))]
    if summary.get("baseline"):
        out.append(("baseline", summary["baseline"]["label"], point.get("baseline")))
    for other in summary.get("others") or []:
        out.append(("other", other["label"], (point.get("others") or {}).get(other["label"])))
    return out


# ---------------------------------------------------------------------------------------------
# Markdown


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#~&"})


def md_text(text: str) -> str:
    """User text safe inside Markdown and a table cell: markup escaped, one line."""
    text = " ".join(str(text).replace("\r", "").split("\n")).strip()
    return text.translate(_MD_SPECIAL) or "(empty)"


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


_PAIR_HEAD = ["n", "Win %", "Tie %", "Lose %", "Advantage", "Advantage 95% CI", "sign-test p",
              "unjudged"]


def _pair_row(label: str, block: dict) -> list[str]:
    return [label, str(block.get("n", "–")), _pct(block.get("win")), _pct(block.get("tie")),
            _pct(block.get("lose")), _signed(block.get("advantage")),
            _ci(block.get("advantage_ci95"), 1), _p(block.get("sign_test_p")),
            str(block.get("unjudged", 0))]


def _n_text(blocks: list[dict]) -> str:
    ns = sorted({b["n"] for b in blocks if isinstance(b, dict) and "n" in b})
    if not ns:
        return "–"
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def _score_cell(block: dict | None) -> str:
    if not block or block.get("mean") is None:
        return "–"
    return f"{block['mean']:.2f} {_ci(block.get('ci95'))}"


def _markdown_pairwise(summary: dict, judge: str) -> list[str]:
    pair = summary.get("pairwise")
    if not pair:
        return []
    cand = summary["candidate"]["label"]
    base = (summary.get("baseline") or {}).get("label", "baseline")
    lines = ["## Pair-wise: candidate vs. baseline (CharacterGLM Tables 7 and 8)", "",
             f"{md_text(cand)} against {md_text(base)} on the same prompt; "
             f"{VERDICT_RULE.get((summary.get('judge') or {}).get('kind'), '')}"
             "Win/Tie/Lose are % of judged pairs from the candidate's side; Advantage = Win − Lose; "
             "p: exact two-sided sign test on wins vs. losses (ties excluded); 95% CI: paired "
             "bootstrap interval of Advantage.", ""]
    lines += ["### Overall", "", f"Judge: {md_text(judge)}.", "",
              *_md_table(["", *_PAIR_HEAD], [_pair_row("all", pair["overall"])])]
    for key, title in (("by_category", "### Per character category (Table 7)"),
                       ("by_topic", "### Per dialogue topic (Table 8)")):
        blocks = pair.get(key) or {}
        if blocks:
            name = "category" if key == "by_category" else "topic"
            lines += [title, "", f"Judge: {md_text(judge)}.", "",
                      *_md_table([name, *_PAIR_HEAD],
                                 [_pair_row(md_text(k), v) for k, v in blocks.items()])]
    lines += _markdown_others(summary, judge)
    bt = (summary.get("bradley_terry") or {}).get("models")
    if bt:
        lines += ["### Bradley-Terry scores (more than two models)", "",
                  f"Judge: {md_text(judge)}. Scores are "
                  f"{md_text(summary['bradley_terry'].get('scale', 'log-strengths'))}; "
                  "P(i beats j) = 1 / (1 + exp(s_j − s_i)); 95% CI by bootstrap.", "",
                  *_md_table(["model", "score", "95% CI", "comparisons"],
                             [[md_text(m), _num(b.get("score"), 3), _ci(b.get("ci95"), 3),
                               str(b.get("n", "–"))] for m, b in bt.items()])]
    return lines


def _markdown_others(summary: dict, judge: str) -> list[str]:
    """Pair-wise rows of the candidate against each further model (``others``)."""
    others = summary.get("pairwise_others") or {}
    if not others:
        return []
    rows = [_pair_row(md_text(label), block["overall"]) for label, block in others.items() if block]
    return ["### Against the other models", "", f"Judge: {md_text(judge)}. The candidate's side "
            "against each model, all prompts.", "", *_md_table(["opponent", *_PAIR_HEAD], rows)]


def _markdown_pointwise(summary: dict, judge: str) -> list[str]:
    point = summary.get("pointwise")
    if not point:
        return []
    dims = point.get("dimensions") or []
    lines = ["## Point-wise scores (CharacterGLM Table 4)", "",
             f"Judge: {md_text(judge)}. Scores 1–5 per reply; cells are the mean and its 95% "
             "confidence interval; n is the number of scored replies.", ""]
    rows = []
    for _role, label, side in _models(summary):
        if side:
            overall = side.get("overall") or {}
            rows.append([md_text(label), *(_score_cell(overall.get(d)) for d in dims),
                         _n_text(list(overall.values()))])
    lines += _md_table(["model", *dims, "n"], rows)
    for key, name in (("by_category", "character category"), ("by_topic", "dialogue topic")):
        for _role, label, side in _models(summary):
            blocks = (side or {}).get(key) or {}
            if blocks:
                lines += [f"### Per {name}: {md_text(label)}", "",
                          f"Judge: {md_text(judge)}.", "",
                          *_md_table([name.split()[-1], *dims, "n"],
                                     [[md_text(k), *(_score_cell(v.get(d)) for d in dims),
                                       _n_text(list(v.values()))] for k, v in blocks.items()])]
    return lines


def _automatic(summary: dict) -> tuple[list[tuple[str, dict]], list[str]]:
    """((model label, automatic block) for every model that has one, the scalar keys)."""
    auto = summary.get("automatic") or {}
    blocks = [(label, auto.get(role) if role != "other" else (auto.get("others") or {}).get(label))
              for role, label, _ in _models(summary)]
    blocks = [(label, b) for label, b in blocks if b]
    keys = sorted({k for _, b in blocks for k, v in b.items() if not isinstance(v, (dict, list))})
    return blocks, keys


def _markdown_automatic(summary: dict) -> list[str]:
    sides, keys = _automatic(summary)
    if not sides:
        return []
    lines = ["## Automatic signals", "",
             "No judge involved: response loss and perplexity on the validation dialogues, "
             "preference accuracy on the validation pairs, and statistics of the generated "
             "replies.", ""]
    lines += _md_table(["metric", *(md_text(label) for label, _ in sides)],
                       [[k, *(_num(b.get(k), 4) for _, b in sides)] for k in keys])
    for key, name in (("by_category", "category"), ("by_topic", "topic")):
        for side, block in sides:
            blocks = block.get(key) or {}
            if blocks:
                metrics = sorted({m for b in blocks.values() for m in b})
                lines += [f"### Automatic signals per {name}: {md_text(side)}", "",
                          *_md_table([name, *metrics],
                                     [[md_text(k), *(_num(b.get(m), 4) for m in metrics)]
                                      for k, b in blocks.items()])]
    return lines


def human_tables(summary: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, note, head, rows) of the people-only tables: agreement and the Turing test."""
    out = []
    agree = summary.get("agreement") or {}
    if agree:
        head = ["question", "annotators", "items", "rated by 2+", "agree %", "Cohen's κ",
                "Fleiss' κ", "Krippendorff's α"]
        rows = []
        for task, block in agree.items():
            for name, b in (block.items() if task == "pointwise" else [(task, block)]):
                alpha = next((v for k, v in b.items() if k.startswith("krippendorff_alpha")), None)
                kind = next((k.rsplit("_", 1)[1] for k in b if k.startswith("krippendorff_alpha")), "")
                rows.append([f"{task}: {name}" if task == "pointwise" else task,
                             str(b.get("annotators", "–")), str(b.get("items", "–")),
                             str(b.get("items_multiply_rated", "–")), _pct(b.get("percent_agreement")),
                             _num(b.get("cohen_kappa"), 3), _num(b.get("fleiss_kappa"), 3),
                             f"{_num(alpha, 3)} ({kind})"])
        out.append(("Annotator agreement", "Cohen's kappa with two annotators, Fleiss' kappa with "
                    "more (items every annotator rated), Krippendorff's alpha over all ratings "
                    "(ordinal for scores, nominal for choices).", head, rows))
    turing = summary.get("turing") or {}
    if turing:
        out.append(("Turing test", "Replies of models mixed with the dataset's human-written "
                    "references; how often annotators said a person wrote them.",
                    ["written by", "judgements", "taken for a person", "%"],
                    [[k, str(b["judgements"]), str(b["taken_for_human"]), _pct(b["taken_for_human_pct"])]
                     for k, b in turing.items()]))
    return out


def _markdown_human(summary: dict) -> list[str]:
    lines = []
    for title, note, head, rows in human_tables(summary):
        lines += [f"## {title}", "", f"Judge: {md_text(judge_text(summary.get('judge')))}. "
                  f"{md_text(note)}", "", *_md_table(head, [[md_text(c) for c in r] for r in rows])]
    return lines


def _markdown_sample(index: int, s: Sample, models: list[tuple[str, str, dict | None]]) -> list[str]:
    head = f"### {index}. {md_text(s.character)} · {md_text(s.category)} · {md_text(s.topic)}"
    lines = [head, "", f"**user:** {md_text(_cut(_last_user(s.context)))}", ""]
    cells_head, cells = [], []
    for role, label, _block in models:
        title = md_text(label)
        notes = []
        if role == "candidate" and s.verdict:
            notes.append(s.verdict)
        if "Overall" in s.scores.get(label, {}):
            notes.append(f"Overall {s.scores[label]['Overall']}")
        cells_head.append(title + (f" ({', '.join(notes)})" if notes else ""))
        cells.append(md_text(_cut(s.replies.get(label, ""))) if label in s.replies else "–")
    if s.reference is not None:
        cells_head.append("reference (dataset)")
        cells.append(md_text(_cut(s.reference)))
    return lines + _md_table(cells_head, [cells])


def render_markdown(results: Results, *, max_samples: int = DEFAULT_SAMPLES,
                    limit: int = MARKDOWN_LIMIT) -> str:
    """The Markdown report (see the module docstring); never longer than ``limit``."""
    summary = results.summary
    judge = judge_text(summary.get("judge"))
    lines = ["# Evaluation: character role-play replies", "",
             *_md_table(["", "model"],
                        [[md_text(m["label"]), md_text(m.get("model") or "")] for m in _model_refs(summary)]
                        + [["judge", md_text(judge_text(summary.get("judge"), details=True))]])]
    skipped = summary.get("skipped") or []
    lines += ["**Skipped:**", "", *(f"- {md_text(s)}" for s in skipped), ""] if skipped else \
        ["Nothing was skipped.", ""]
    lines += _markdown_pairwise(summary, judge)
    lines += _markdown_pointwise(summary, judge)
    lines += _markdown_human(summary)
    lines += _markdown_automatic(summary)
    text = "\n".join(lines)

    all_samples = samples(results)
    if not all_samples:
        return text + "\n"
    models = _models(summary)
    blocks: list[str] = []
    size = len(text)
    reserve = 400  # room for the heading and the truncation note
    for i, s in enumerate(all_samples[:max_samples], 1):
        block = "\n".join(_markdown_sample(i, s, models))
        if size + len(block) + 1 > limit - reserve:
            break
        blocks.append(block)
        size += len(block) + 1
    shown = len(blocks)
    note = (f"{shown} of {len(all_samples)} prompts shown, replies cut at {REPLY_CHARS} "
            "characters; every reply is in replies.jsonl.")
    if shown < min(max_samples, len(all_samples)):
        note += (" More samples would take this page past the ~400k characters the Kubeflow UI "
                 "renders.")
    return "\n".join([text, "## Sample replies", "", note, "", *blocks]).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# HTML


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2430;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
h3{font-size:15px}p.judge{color:#4a5568;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #d8dde6;padding:3px 8px;text-align:left}
td.num{text-align:right;white-space:nowrap}
.skipped{background:#fff7e6;border:1px solid #f0c36d;padding:8px 12px}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px;margin-bottom:6px}
.reply{border:1px solid #d8dde6;border-radius:4px;padding:8px;white-space:pre-wrap;font-size:13px}
.reply h4{margin:0 0 4px 0;font-size:12px;color:#4a5568}
.sample{margin:14px 0 22px 0}.context{font-size:13px;color:#2d3748;white-space:pre-wrap}
.reference{font-size:12px;color:#4a5568;white-space:pre-wrap}
"""
COLORS = {"win": "#2f9e44", "tie": "#adb5bd", "lose": "#e03131",
          "candidate": "#1c7ed6", "baseline": "#f59f00"}


def _stacked_bars(rows: list[tuple[str, dict]], chart: str) -> str:
    """Horizontal 100% bars of win/tie/lose per row, Advantage and n written beside them."""
    label_w, bar_w, right_w, row_h = 190, 420, 230, 26
    height = row_h * len(rows) + 24
    parts = [f'<svg class="chart {chart}" role="img" width="{label_w + bar_w + right_w}" '
             f'height="{height}" viewBox="0 0 {label_w + bar_w + right_w} {height}" '
             'xmlns="http://www.w3.org/2000/svg" font-size="12">']
    for i, (label, b) in enumerate(rows):
        y = 4 + i * row_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{esc(label)}</text>')
        x = float(label_w)
        for part in ("win", "tie", "lose"):
            w = bar_w * max(0.0, float(b.get(part) or 0.0)) / 100.0
            parts.append(f'<rect class="bar {part}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                         f'height="{row_h - 6}" fill="{COLORS[part]}"><title>{esc(label)}: '
                         f'{part} {_pct(b.get(part))}%</title></rect>')
            if w >= 34:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 15}" text-anchor="middle" '
                             f'fill="#fff">{_pct(b.get(part))}</text>')
            x += w
        parts.append(f'<text x="{label_w + bar_w + 8}" y="{y + 15}">Adv {_signed(b.get("advantage"))}'
                     f' · n {esc(b.get("n", "–"))} · p {_p(b.get("sign_test_p"))}</text>')
    axis_y = 4 + len(rows) * row_h + 12
    for tick in (0, 25, 50, 75, 100):
        tx = label_w + bar_w * tick / 100
        parts.append(f'<text x="{tx:.0f}" y="{axis_y}" text-anchor="middle" fill="#718096">{tick}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def _score_chart(summary: dict) -> str:
    """Grouped bars: each model's mean per dimension on the 1-5 scale, with CI whiskers."""
    dims = summary["pointwise"].get("dimensions") or []
    models = [(role, label, block) for role, label, block in _models(summary) if block]
    bar_w = 30 if len(models) <= 2 else max(8, 84 // len(models))
    group_w, left, top, plot_h = max(96, bar_w * len(models) + 12), 40, 10, 200
    width = left + group_w * max(1, len(dims)) + 10
    height = top + plot_h + 40

    def y_of(score: float) -> float:  # 1 at the bottom, 5 at the top
        return top + plot_h * (1 - (min(max(score, 1.0), 5.0) - 1) / 4)

    parts = [f'<svg class="chart pointwise" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    for tick in range(1, 6):
        ty = y_of(tick)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e2e8f0"/>'
                     f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="#718096">{tick}</text>')
    for d, dim in enumerate(dims):
        gx = left + d * group_w + (group_w - bar_w * len(models)) / 2
        for m, (role, label, side) in enumerate(models):
            block = (side.get("overall") or {}).get(dim) or {}
            if block.get("mean") is None:
                continue
            x, y = gx + m * bar_w, y_of(block["mean"])
            parts.append(f'<rect class="bar score {role}" x="{x:.1f}" y="{y:.1f}" width="{bar_w - 4}" '
                         f'height="{top + plot_h - y:.1f}" fill="{COLORS.get(role, "#868e96")}">'
                         f'<title>{esc(label)} {esc(dim)}: {block["mean"]:.2f} '
                         f'{_ci(block.get("ci95"))} n={esc(block.get("n", "–"))}</title></rect>')
            ci = block.get("ci95")
            if ci and ci[0] is not None and ci[1] is not None:
                cx = x + (bar_w - 4) / 2
                parts.append(f'<line class="ci" x1="{cx:.1f}" x2="{cx:.1f}" y1="{y_of(ci[0]):.1f}" '
                             f'y2="{y_of(ci[1]):.1f}" stroke="#1a202c" stroke-width="1.5"/>')
        parts.append(f'<text x="{left + d * group_w + group_w / 2:.1f}" y="{top + plot_h + 16}" '
                     f'text-anchor="middle">{esc(dim)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_NUMERIC = re.compile(r"^[-+<\[–]*[\d–]")


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr>"]
    for r in rows:
        out += ["<tr>", *(f'<td class="num">{esc(c)}</td>' if _NUMERIC.match(str(c))
                          else f"<td>{esc(c)}</td>" for c in r), "</tr>"]
    out.append("</table>")
    return "".join(out)


def _legend(items: list[tuple[str, str]]) -> str:
    """(text, colour key) pairs as a row of swatches."""
    return '<p class="legend">' + "".join(
        f'<span><i style="background:{COLORS.get(key, "#868e96")}"></i>{esc(text)}</span>'
        for text, key in items) + "</p>"


def render_html(results: Results, *, max_samples: int = DEFAULT_SAMPLES) -> str:
    """The HTML report (see the module docstring): one self-contained page."""
    summary = results.summary
    judge = judge_text(summary.get("judge"))
    body = ["<h1>Evaluation: character role-play replies</h1>",
            _html_table(["", "model"], [[m["label"], m.get("model") or ""] for m in _model_refs(summary)]
                        + [["judge", judge_text(summary.get("judge"), details=True)]])]
    skipped = summary.get("skipped") or []
    if skipped:
        body.append('<div class="skipped"><b>Skipped:</b><ul>'
                    + "".join(f"<li>{esc(s)}</li>" for s in skipped) + "</ul></div>")
    pair = summary.get("pairwise")
    if pair:
        body += ["<h2>Pair-wise: candidate vs. baseline</h2>",
                 f'<p class="judge">Judge: {esc(judge)}. '
                 f"{esc(VERDICT_RULE.get((summary.get('judge') or {}).get('kind'), ''))}"
                 "Advantage = win − lose; p: exact sign test; 95% CI: paired bootstrap.</p>", _legend([("win", "win"), ("tie", "tie"), ("lose", "lose")])]
        for key, title, chart in (("by_category", "Per character category", "pairwise-category"),
                                  ("by_topic", "Per dialogue topic", "pairwise-topic")):
            rows = [("overall", pair["overall"]), *(pair.get(key) or {}).items()]
            body += [f"<h3>{title}</h3>", _stacked_bars(rows, chart),
                     _html_table([title.split()[-1], *_PAIR_HEAD],
                                 [_pair_row(k, v) for k, v in rows])]
    point = summary.get("pointwise")
    if point:
        dims = point.get("dimensions") or []
        models = [(role, label, block) for role, label, block in _models(summary) if block]
        body += ["<h2>Point-wise scores per dimension</h2>",
                 f'<p class="judge">Judge: {esc(judge)}. Mean on the 1–5 scale with its 95% '
                 "confidence interval.</p>", _legend([(label, role) for role, label, _ in models]),
                 _score_chart(summary),
                 _html_table(["model", *dims],
                             [[label, *(_score_cell((block.get("overall") or {}).get(d)) for d in dims)]
                              for _role, label, block in models])]
    for title, note, head, rows in human_tables(summary):
        body += [f"<h2>{esc(title)}</h2>", f'<p class="judge">Judge: {esc(judge)}. {esc(note)}</p>',
                 _html_table(head, rows)]
    sides, keys = _automatic(summary)
    if sides:
        body += ["<h2>Automatic signals</h2>",
                 _html_table(["metric", *(label for label, _ in sides)],
                             [[k, *(_num(b.get(k), 4) for _, b in sides)] for k in keys])]
    every = samples(results)
    shown = every[:max_samples]
    if shown:
        models = _models(summary)
        body += ["<h2>Sample replies</h2>",
                 f"<p>{len(shown)} of {len(every)} prompts; replies cut at "
                 f"{REPLY_CHARS} characters (all in replies.jsonl).</p>"]
        for i, s in enumerate(shown, 1):
            cards = []
            for role, label, _block in models:
                notes = [s.verdict] if role == "candidate" and s.verdict else []
                if "Overall" in s.scores.get(label, {}):
                    notes.append(f"Overall {s.scores[label]['Overall']}")
                title = label + (f" ({', '.join(notes)})" if notes else "")
                text = s.replies.get(label, "")
                cards.append(f'<div class="reply {role}"><h4>{esc(title)}</h4>'
                             + (esc(_cut(text)) if text else '<i class="empty">(empty reply)</i>')
                             + "</div>")
            body.append(f'<div class="sample"><h3>{i}. {esc(s.character)} · {esc(s.category)} · '
                        f'{esc(s.topic)}</h3><p class="context"><b>user:</b> '
                        f'{esc(_cut(_last_user(s.context)))}</p><div class="pair">{"".join(cards)}</div>'
                        + (f'<p class="reference"><b>reference:</b> {esc(_cut(s.reference))}</p>'
                           if s.reference is not None else "") + "</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">"
            "<title>charops evaluation</title><style>" + _CSS.strip() + "</style></head><body>"
            + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------------------------------------


def write_reports(results_dir: str | Path, out_dir: str | Path | None = None, *,
                  max_samples: int = DEFAULT_SAMPLES) -> dict[str, Path]:
    """Render ``report.md``, ``report.html``, ``headline.json`` and ``metrics.json`` from a
    results directory (into ``out_dir``, default the results directory); returns their paths."""
    results = load_results(results_dir)
    out = Path(out_dir) if out_dir is not None else Path(results_dir)
    paths = {"markdown": out / "report.md", "html": out / "report.html",
             "headline": out / "headline.json", "metrics": out / "metrics.json"}
    # Render everything before writing anything: a failure leaves the old reports intact.
    markdown = render_markdown(results, max_samples=max_samples)
    page = render_html(results, max_samples=max_samples)
    headline = headline_metrics(results.summary)
    metrics = registry_metrics(results.summary)
    write_text(paths["markdown"], markdown)
    write_text(paths["html"], page)
    write_json(paths["headline"], headline)
    write_json(paths["metrics"], metrics)
    return paths

