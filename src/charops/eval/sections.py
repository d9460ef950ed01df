"""What the evaluation reports say, built once: a list of :class:`Section` from a results directory.

Both reports are rendered from the same sections (``charops.eval.render_md`` and
``charops.eval.render_html``), so the Markdown the Kubeflow UI shows and the HTML page cannot
drift apart: a section has a title, a level and blocks (paragraphs, tables, a callout, a chart,
sample replies); Markdown leaves charts out (the UI shows no images there)::

    from charops.eval.sections import build_sections
    from charops.eval.summary import load_results
    for s in build_sections(load_results("runs/eval")):
        print("#" * s.level, s.title)

To add a section, write ``def my_sections(results: Results) -> list[Section]`` (return ``[]``
when the summary has nothing for it) and put it into :data:`BUILDERS` where it belongs in the
page; both renderers pick it up (docs/evaluation.md, "Adding a report section").

Text in blocks is plain: each renderer escapes it for its format. Cells the report formats
itself (numbers, intervals, metric keys) are :class:`Safe` and shown as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from charops.eval.summary import Results

# A reply longer than this is cut in the reports (the full text stays in replies.jsonl).
REPLY_CHARS = 800
DEFAULT_SAMPLES = 40

JUDGE_NAMES = {"reward_model": "reward model", "openai": "LLM judge (OpenAI-compatible endpoint)",
               "human": "people (human annotation)", "none": "none"}

# Below this held-out pair accuracy a reward-model judge is too weak to trust: the reports and
# the run's last screen say so next to its verdicts (issue 15).
WEAK_JUDGE = 0.65

# How each judge reaches a pair-wise verdict, stated above the tables.
VERDICT_RULE = {
    "openai": "each pair is judged in both orders and two verdicts that disagree count as a tie. ",
    "reward_model": "the reply with the higher reward wins; a difference within the tie margin is a "
                    "tie. ",
    "human": "the annotators' majority wins; an even split is a tie. ",
}


# ---------------------------------------------------------------------------------------------
# The section model


class Safe(str):
    """Text the report wrote itself (a number, an interval, a metric key): no markup to escape."""


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]


@dataclass
class Callout:
    """A highlighted list under a bold label (what was skipped, a warning)."""

    label: str
    items: list[str]


@dataclass
class WinTieLoseChart:
    """Stacked 100% win/tie/lose bars, one per (label, pair-wise block); ``name`` is its CSS class."""

    name: str
    rows: list[tuple[str, dict]]


@dataclass
class ScoreChart:
    """Each model's mean per dimension on the 1-5 scale, with CI whiskers."""

    dimensions: list[str]
    models: list[tuple[str, str, dict]]  # (role, label, point-wise block)


@dataclass
class SampleList:
    """Prompts with every model's reply; renderers show the first ``limit`` that fit."""

    samples: list[Sample]
    models: list[tuple[str, str, dict | None]]
    limit: int


Block = Paragraph | Table | Callout | WinTieLoseChart | ScoreChart | SampleList
CHARTS = (WinTieLoseChart, ScoreChart)  # blocks only the HTML report draws


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


# ---------------------------------------------------------------------------------------------
# Numbers as text


def num(value: Any, digits: int = 2) -> Safe:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)):
        return Safe("–")
    if isinstance(value, int):  # counts stay counts
        return Safe(str(value))
    return Safe(f"{value:.{digits}f}")


def pct(value: Any) -> Safe:
    return num(value, 1)


def signed(value: Any) -> Safe:
    return Safe("–" if not isinstance(value, (int, float)) else f"{value:+.1f}")


def ci(interval: Any, digits: int = 2) -> Safe:
    if not isinstance(interval, list) or len(interval) != 2 \
            or not all(isinstance(v, (int, float)) for v in interval):
        return Safe("–")
    return Safe(f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]")


def p_value(value: Any) -> Safe:
    if not isinstance(value, (int, float)):
        return Safe("–")
    return Safe("<0.001" if value < 0.001 else f"{value:.3f}")


def count(value: Any) -> Safe:
    return Safe("–" if value is None else str(value))


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
                    f"{k} {num(v, 3) if isinstance(v, float) else v}" for k, v in leaves) + ")")
            continue
        parts.append(f"{key.replace('_', ' ')} {num(value, 3) if isinstance(value, float) else value}")
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


# ---------------------------------------------------------------------------------------------
# Models and samples


def candidate_label(summary: dict) -> str:
    return str((summary.get("candidate") or {}).get("label") or "candidate")


def model_refs(summary: dict) -> list[dict]:
    """``{"label", "model"}`` of the candidate, the baseline and any other model."""
    return [summary.get("candidate") or {"label": "candidate"},
            *([summary["baseline"]] if summary.get("baseline") else []),
            *(o for o in summary.get("others") or [] if isinstance(o, dict))]


def models(summary: dict) -> list[tuple[str, str, dict | None]]:
    """(role, label, point-wise block or None) of every model, in report order: the candidate,
    the baseline, then any other model compared with the candidate (role ``other``)."""
    point = summary.get("pointwise") or {}
    out = [("candidate", candidate_label(summary), point.get("candidate"))]
    if summary.get("baseline"):
        out.append(("baseline", str(summary["baseline"].get("label", "baseline")), point.get("baseline")))
    for other in summary.get("others") or []:
        if isinstance(other, dict):
            out.append(("other", str(other.get("label")), (point.get("others") or {}).get(other.get("label"))))
    return out


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

    def title(self, index: int) -> str:
        return f"{index}. {self.character} · {self.category} · {self.topic}"

    def user_turn(self) -> str:
        """The last user message of the context: what the replies answer."""
        return next((m.get("content") or "" for m in reversed(self.context) if m.get("role") == "user"), "")

    def notes(self, role: str, label: str) -> str:
        """The candidate's verdict and each model's Overall score, for the reply's header."""
        notes = [self.verdict] if role == "candidate" and self.verdict else []
        if "Overall" in self.scores.get(label, {}):
            notes.append(f"Overall {self.scores[label]['Overall']}")
        return label + (f" ({', '.join(notes)})" if notes else "")


def samples(results: Results) -> list[Sample]:
    """The prompts in ``replies.jsonl`` order, each with every model's reply (by label)."""
    cand = candidate_label(results.summary)
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


def cut(text: str, limit: int = REPLY_CHARS) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " …[cut]"


# ---------------------------------------------------------------------------------------------
# The sections, in page order


def judge_accuracy(judge: dict | None) -> float | None:
    """A reward-model judge's held-out pair accuracy (None for other judges)."""
    acc = (judge or {}).get("pair_accuracy")
    return float(acc) if (judge or {}).get("kind") == "reward_model" and isinstance(acc, (int, float)) else None


def _judge(summary: dict) -> str:
    """The judge line next to each verdict table, with a reward model's held-out pair accuracy."""
    judge = summary.get("judge") or {}
    text = judge_text(judge)
    acc = judge_accuracy(judge)
    if acc is not None:
        text += f", held-out pair accuracy {acc:.0%}" + (f" on {judge['pairs']} pairs" if judge.get("pairs") else "")
        if acc < WEAK_JUDGE:
            text += " (too weak to trust)"
    return text


def weak_judge_callout(summary: dict) -> list[Callout]:
    """A plain warning when the judge's verdicts cannot be trusted."""
    acc = judge_accuracy(summary.get("judge"))
    if acc is None or acc >= WEAK_JUDGE:
        return []
    return [Callout("The judge is too weak to trust:", [
        f"the reward model prefers the chosen reply of only {acc:.0%} of the held-out preference pairs "
        f"(below {WEAK_JUDGE:.0%}); its win/tie/lose verdicts and scores say little about the models. "
        "Train it longer, on more pairs, or judge with an LLM (judge=openai)."])]


def overview_sections(results: Results) -> list[Section]:
    """The title, the models and the judge, and what was skipped."""
    s = results.summary
    skipped = [str(x) for x in s.get("skipped") or []]
    table = Table([Safe(""), "model"], [[str(m.get("label")), str(m.get("model") or "")] for m in model_refs(s)]
                  + [["judge", judge_text(s.get("judge"), details=True)]])
    return [Section("Evaluation: character role-play replies", [
        table, Callout("Skipped:", skipped) if skipped else Paragraph("Nothing was skipped.")], level=1)]


PAIR_HEAD = ["n", "Win %", "Tie %", "Lose %", "Advantage", "Advantage 95% CI", "sign-test p",
             "unjudged"]


def pair_row(label: str, block: dict) -> list[str]:
    return [label, count(block.get("n", "–")), pct(block.get("win")), pct(block.get("tie")),
            pct(block.get("lose")), signed(block.get("advantage")),
            ci(block.get("advantage_ci95"), 1), p_value(block.get("sign_test_p")),
            count(block.get("unjudged", 0))]


def pairwise_sections(results: Results) -> list[Section]:
    """CharacterGLM Tables 7 and 8: candidate vs baseline overall, per category and per topic."""
    s = results.summary
    pair = s.get("pairwise")
    if not pair:
        return []
    judge = _judge(s)
    base = (s.get("baseline") or {}).get("label", "baseline")
    overall = pair.get("overall") or {}
    out = [Section("Pair-wise: candidate vs. baseline (CharacterGLM Tables 7 and 8)", [Paragraph(
        f"{candidate_label(s)} against {base} on the same prompt; "
        f"{VERDICT_RULE.get((s.get('judge') or {}).get('kind'), '')}"
        "Win/Tie/Lose are % of judged pairs from the candidate's side; Advantage = Win − Lose; "
        "p: exact two-sided sign test on wins vs. losses (ties excluded); 95% CI: paired "
        "bootstrap interval of Advantage."), *weak_judge_callout(s)]),
        Section("Overall", [Paragraph(f"Judge: {judge}."), Table([Safe(""), *PAIR_HEAD], [pair_row("all", overall)])],
                level=3)]
    for key, title, name in (("by_category", "Per character category (Table 7)", "category"),
                             ("by_topic", "Per dialogue topic (Table 8)", "topic")):
        blocks = pair.get(key) or {}
        if blocks:
            out.append(Section(title, [
                Paragraph(f"Judge: {judge}."),
                WinTieLoseChart(f"pairwise-{name}", [("overall", overall), *blocks.items()]),
                Table([name, *PAIR_HEAD], [pair_row(k, v) for k, v in blocks.items()])], level=3))
    return out


def others_sections(results: Results) -> list[Section]:
    """The candidate against each further model (``others``), all prompts."""
    s = results.summary
    others = {k: v for k, v in (s.get("pairwise_others") or {}).items() if v}
    if not others:
        return []
    rows = [(label, block.get("overall") or {}) for label, block in others.items()]
    return [Section("Against the other models", [
        Paragraph(f"Judge: {_judge(s)}. The candidate's side against each model, all prompts."),
        WinTieLoseChart("pairwise-others", rows),
        Table(["opponent", *PAIR_HEAD], [pair_row(label, b) for label, b in rows])], level=3)]


def bradley_terry_sections(results: Results) -> list[Section]:
    """Bradley-Terry strengths of every model, when more than two were compared."""
    s = results.summary
    bt = (s.get("bradley_terry") or {}).get("models")
    if not bt:
        return []
    return [Section("Bradley-Terry scores (more than two models)", [
        Paragraph(f"Judge: {_judge(s)}. Scores are {s['bradley_terry'].get('scale', 'log-strengths')}; "
                  "P(i beats j) = 1 / (1 + exp(s_j − s_i)); 95% CI by bootstrap."),
        Table(["model", "score", "95% CI", "comparisons"],
              [[m, num(b.get("score"), 3), ci(b.get("ci95"), 3), count(b.get("n", "–"))]
               for m, b in bt.items()])], level=3)]


def _score_cell(block: dict | None) -> Safe:
    if not block or not isinstance(block.get("mean"), (int, float)):
        return Safe("–")
    return Safe(f"{block['mean']:.2f} {ci(block.get('ci95'))}")


def _n_text(blocks: list[dict]) -> Safe:
    ns = sorted({b["n"] for b in blocks if isinstance(b, dict) and isinstance(b.get("n"), int)})
    if not ns:
        return Safe("–")
    return Safe(str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}")


def _unscored(summary: dict, dims: list[str]) -> list[Paragraph]:
    """Which of CharacterGLM's dimensions this judge does not score, said, not left out silently."""
    from charops.eval.rubric import load_rubric

    missing = [d for d in load_rubric("characterglm-v1").keys if d not in dims]
    if not missing:
        return []
    why = (summary.get("judge") or {}).get("pointwise_note")
    return [Paragraph(f"Not scored by this judge: {', '.join(missing)}" + (f" ({why})." if why else "."))]


def pointwise_sections(results: Results) -> list[Section]:
    """CharacterGLM Table 4: each model's mean per dimension, overall, per category, per topic."""
    s = results.summary
    point = s.get("pointwise")
    if not point:
        return []
    judge = _judge(s)
    dims = list(point.get("dimensions") or [])
    scored = [(role, label, side) for role, label, side in models(s) if side]
    rows = [[label, *(_score_cell((side.get("overall") or {}).get(d)) for d in dims),
             _n_text(list((side.get("overall") or {}).values()))] for _role, label, side in scored]
    out = [Section("Point-wise scores (CharacterGLM Table 4)", [
        Paragraph(f"Judge: {judge}. Scores 1–5 per reply; cells are the mean and its 95% "
                  "confidence interval; n is the number of scored replies."),
        *_unscored(s, dims), ScoreChart(dims, scored), Table(["model", *dims, "n"], rows)])]
    for key, name in (("by_category", "character category"), ("by_topic", "dialogue topic")):
        for _role, label, side in scored:
            blocks = side.get(key) or {}
            if blocks:
                out.append(Section(f"Per {name}: {label}", [
                    Paragraph(f"Judge: {judge}."),
                    Table([name.split()[-1], *dims, "n"],
                          [[k, *(_score_cell(v.get(d)) for d in dims), _n_text(list(v.values()))]
                           for k, v in blocks.items()])], level=3))
    return out


def human_sections(results: Results) -> list[Section]:
    """People-only tables: annotator agreement and the Turing test."""
    s = results.summary
    judge = _judge(s)
    out = []
    agree = s.get("agreement") or {}
    if agree:
        head = ["question", "annotators", "items", "rated by 2+", "agree %", "Cohen's κ",
                "Fleiss' κ", "Krippendorff's α"]
        rows = []
        for task, block in agree.items():
            for name, b in (block.items() if task == "pointwise" else [(task, block)]):
                alpha = next((v for k, v in b.items() if k.startswith("krippendorff_alpha")), None)
                kind = next((k.rsplit("_", 1)[1] for k in b if k.startswith("krippendorff_alpha")), "")
                rows.append([f"{task}: {name}" if task == "pointwise" else task,
                             count(b.get("annotators")), count(b.get("items")),
                             count(b.get("items_multiply_rated")), pct(b.get("percent_agreement")),
                             num(b.get("cohen_kappa"), 3), num(b.get("fleiss_kappa"), 3),
                             Safe(f"{num(alpha, 3)} ({kind})")])
        out.append(Section("Annotator agreement", [
            Paragraph(f"Judge: {judge}. Cohen's kappa with two annotators, Fleiss' kappa with more "
                      "(items every annotator rated), Krippendorff's alpha over all ratings "
                      "(ordinal for scores, nominal for choices)."), Table(head, rows)]))
    turing = s.get("turing") or {}
    if turing:
        out.append(Section("Turing test", [
            Paragraph(f"Judge: {judge}. Replies of models mixed with the dataset's human-written "
                      "references; how often annotators said a person wrote them."),
            Table(["written by", "judgements", "taken for a person", "%"],
                  [[k, count(b.get("judgements")), count(b.get("taken_for_human")),
                    pct(b.get("taken_for_human_pct"))] for k, b in turing.items()])]))
    return out


def automatic_sections(results: Results) -> list[Section]:
    """Judge-free numbers: loss, perplexity, preference accuracy and reply statistics."""
    s = results.summary
    auto = s.get("automatic") or {}
    sides = [(label, auto.get(role) if role != "other" else (auto.get("others") or {}).get(label))
             for role, label, _ in models(s)]
    sides = [(label, b) for label, b in sides if isinstance(b, dict) and b]
    if not sides:
        return []
    keys = sorted({k for _, b in sides for k, v in b.items() if not isinstance(v, (dict, list))})
    out = [Section("Automatic signals", [
        Paragraph("No judge involved: response loss and perplexity on the validation dialogues, "
                  "preference accuracy on the validation pairs, and statistics of the generated "
                  "replies."),
        Table(["metric", *(label for label, _ in sides)],
              [[Safe(k), *(num(b.get(k), 4) for _, b in sides)] for k in keys])])]
    for key, name in (("by_category", "category"), ("by_topic", "topic")):
        for label, block in sides:
            groups = block.get(key) or {}
            if groups:
                metrics = sorted({m for b in groups.values() for m in b})
                out.append(Section(f"Automatic signals per {name}: {label}", [
                    Table([name, *map(Safe, metrics)],
                          [[k, *(num(b.get(m), 4) for m in metrics)] for k, b in groups.items()])],
                    level=3))
    return out


def _rate_cell(block: dict | None) -> Safe:
    if not block or block.get("rate") is None:
        return Safe("–")
    return Safe(f"{100 * block['rate']:.1f}% ({block['yes']}/{block['n']})")


def _mt_overview(mt: dict) -> Section:
    user, probe = mt.get("user") or {}, mt.get("memory_probe")
    score = (mt.get("judge") or {}).get("conversation_score")
    text = (f"{count(mt.get('conversations'))} conversations of {count(mt.get('turns'))} user turns per model, "
            "from the same seeded starts (the held-out dialogue's profile and the character's greeting). "
            f"User simulator: {user.get('kind', '–')}" + (f" ({user['model']})" if user.get("model") else "")
            + f". Judge: {judge_text(mt.get('judge'))}" + (f"; the conversation score is the {score}" if score else "")
            + ". " + (f"Memory probe: a fact stated in turn {probe['stated_turn']} is asked back in turn "
                      f"{probe['asked_turn']}." if probe else "No memory probe."))
    skipped = [Callout("Skipped:", [str(x) for x in mt["skipped"]])] if mt.get("skipped") else []
    return Section("Multi-turn: whole conversations", [Paragraph(text), *skipped])


def _mt_pairwise(mt: dict, labels: list[str]) -> list[Section]:
    pair = mt.get("pairwise")
    out = []
    if pair:
        overall = pair.get("overall") or {}
        rule = VERDICT_RULE.get((mt.get("judge") or {}).get("kind"), "")
        out.append(Section("Conversation-level pair-wise (Tables 7 and 8, whole conversations)", [
            Paragraph(f"{labels[0]} against {labels[1] if len(labels) > 1 else 'the baseline'}, conversation "
                      f"against conversation; {rule}Win/Tie/Lose in %, Advantage = Win − Lose, sign-test p, "
                      "paired bootstrap 95% CI."),
            Table([Safe(""), *PAIR_HEAD], [pair_row("all", overall)])], level=3))
        for key, name in (("by_category", "category"), ("by_topic", "topic")):
            blocks = pair.get(key) or {}
            if blocks:
                out.append(Section(f"Conversations per {name}", [
                    WinTieLoseChart(f"multiturn-{name}", [("overall", overall), *blocks.items()]),
                    Table([name, *PAIR_HEAD], [pair_row(k, v) for k, v in blocks.items()])], level=3))
    others = {k: v for k, v in (mt.get("pairwise_others") or {}).items() if v}
    if others:
        out.append(Section("Conversations against the other models", [
            Table(["opponent", *PAIR_HEAD], [pair_row(k, v.get("overall") or {}) for k, v in others.items()])],
            level=3))
    point = mt.get("pointwise")
    if point:
        dims = list(point.get("dimensions") or [])
        rows = [[label, *(_score_cell(((point.get(label) or {}).get("overall") or {}).get(d)) for d in dims)]
                for label in labels if point.get(label)]
        out.append(Section("Conversation point-wise scores", [
            Paragraph("Scores 1–5 per conversation (mean and 95% CI)."), Table(["model", *dims], rows)], level=3))
    return out


def _rate_table(blocks: dict, key: str, columns: list[str], first: list[str]) -> Table:
    """One row per model: its overall rate (``first``, when given) and one per column of ``key``."""
    return Table(["model", *first, *columns],
                 [[label, *([_rate_cell(b)] if first else []),
                   *(_rate_cell((b.get(key) or {}).get(c)) for c in columns)] for label, b in blocks.items()])


def _mt_probes(mt: dict) -> list[Section]:
    out = []
    memory = mt.get("memory")
    if memory:
        cats = sorted({c for b in memory.values() for c in (b.get("by_category") or {})})
        out.append(Section("Memory probe", [
            Paragraph("Recalled: the reply to the question names the fact (a rule: case-insensitive containment)."),
            _rate_table(memory, "by_category", cats, ["all"])], level=3))
    boundary = mt.get("boundary")
    if boundary:
        cats = sorted({c for b in boundary.values() for c in (b.get("by_category") or {})})
        kinds = sorted({k for b in boundary.values() for k in (b.get("by_kind") or {})})
        judged_by = sorted({j for b in boundary.values() for j in b.get("judged_by") or []})
        rule = (" (a marker rule: a reply that says it does not know and then invents still counts as a "
                "deflection)." if "rule" in judged_by else ".")
        out.append(Section("Knowledge boundary", [
            Paragraph("Questions the character cannot know (later events, another universe, technical facts "
                      "outside its life); the score is the share of in-character deflections rather than "
                      f"invented answers. Judged by: {', '.join(judged_by) or '–'}{rule}"),
            _rate_table(boundary, "by_category", cats, ["all"]), _rate_table(boundary, "by_kind", kinds, [])],
            level=3))
    return out


def _mt_signals(mt: dict) -> list[Section]:
    sig = mt.get("signals") or {}
    if not sig:
        return []
    keys = ["cross_turn_repetition", "role_break_rate", "length_slope", "memory_recall"]
    rows = [[Safe(k), *(num(b.get(k), 3) for b in sig.values())] for k in keys]
    for key, fmt in (("role_break_by_turn", "{:.2f}"), ("length_by_turn", "{:.0f}")):
        rows.append([Safe(key), *(Safe(" ".join(fmt.format(x) for x in b.get(key) or [])) for b in sig.values())])
    return [Section("Conversation signals", [
        Paragraph("No judge involved: repetition of earlier replies' trigrams, stepping out of the role per "
                  "turn, and drift in reply length (least-squares characters per turn)."),
        Table(["metric", *sig.keys()], rows)], level=3)]


def multiturn_sections(results: Results) -> list[Section]:
    """Whole conversations (charops.eval.multiturn): conversation-level win/tie/lose by category
    and topic, point-wise scores, memory recall, the knowledge-boundary score and the
    conversation signals."""
    mt = results.summary.get("multiturn")
    if not mt:
        return []
    labels = [str(x) for x in mt.get("models") or []]
    return [_mt_overview(mt), *_mt_pairwise(mt, labels), *_mt_probes(mt), *_mt_signals(mt)]


# The page, top to bottom. Each builder returns [] when the summary has nothing for it.
BUILDERS: list[Callable[[Results], list[Section]]] = [
    overview_sections, pairwise_sections, others_sections, bradley_terry_sections,
    pointwise_sections, multiturn_sections, human_sections, automatic_sections,
]


def build_sections(results: Results, *, max_samples: int = DEFAULT_SAMPLES) -> list[Section]:
    """Every section of the report, in page order; sample replies last."""
    out = [section for build in BUILDERS for section in build(results)]
    every = samples(results)
    if every:
        out.append(Section("Sample replies", [SampleList(every, models(results.summary), max_samples)]))
    return out
