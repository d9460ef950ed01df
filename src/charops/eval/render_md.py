"""The Markdown report (``report.md``), rendered from :mod:`charops.eval.sections`.

    from charops.eval.render_md import render_markdown
    from charops.eval.summary import load_results
    print(render_markdown(load_results("runs/eval")))

The Kubeflow UI cuts Markdown past ~400k characters and shows raw HTML in Markdown as text, so
the page holds no HTML, every text from models, datasets and judges is escaped, charts are left
out, and sample replies stop before :data:`MARKDOWN_LIMIT` with a note saying how many were shown.
"""

from __future__ import annotations

from charops.eval.sections import (
    CHARTS,
    DEFAULT_SAMPLES,
    REPLY_CHARS,
    Callout,
    Paragraph,
    Safe,
    SampleList,
    Section,
    Table,
    build_sections,
    cut,
)
from charops.eval.summary import Results

# The Kubeflow UI truncates Markdown past ~400k characters; stay clearly below.
MARKDOWN_LIMIT = 380_000

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#~&"})


def md_text(text: str) -> str:
    """User text safe inside Markdown and a table cell: markup escaped, one line."""
    text = " ".join(str(text).replace("\r", "").split("\n")).strip()
    return text.translate(_MD_SPECIAL) or "(empty)"


def _cell(text: str) -> str:
    return str(text) if isinstance(text, Safe) else md_text(text)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(map(_cell, head)) + " |", "|" + " --- |" * len(head),
            *("| " + " | ".join(map(_cell, r)) + " |" for r in rows), ""]


def _samples(block: SampleList, size: int, limit: int) -> list[str]:
    """The sample blocks that fit in ``limit - size`` characters, after a note on how many."""
    out: list[str] = []
    reserve = 400  # room for the heading and the truncation note
    for i, s in enumerate(block.samples[:block.limit], 1):
        head, cells = [], []
        for role, label, _ in block.models:
            head.append(s.notes(role, label))
            cells.append(md_text(cut(s.replies[label])) if label in s.replies else Safe("–"))
        if s.reference is not None:
            head.append("reference (dataset)")
            cells.append(md_text(cut(s.reference)))
        lines = "\n".join([f"### {md_text(s.title(i))}", "", f"**user:** {md_text(cut(s.user_turn()))}",
                           "", *_table(head, [list(map(Safe, cells))])])
        if size + len(lines) + 1 > limit - reserve:
            break
        out.append(lines)
        size += len(lines) + 1
    note = (f"{len(out)} of {len(block.samples)} prompts shown, replies cut at {REPLY_CHARS} "
            "characters; every reply is in replies.jsonl.")
    if len(out) < min(block.limit, len(block.samples)):
        note += (" More samples would take this page past the ~400k characters the Kubeflow UI "
                 "renders.")
    return [note, "", *out]


def render_sections(sections: list[Section], *, limit: int = MARKDOWN_LIMIT) -> str:
    lines: list[str] = []
    for section in sections:
        lines += ["#" * section.level + " " + md_text(section.title), ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                lines += [md_text(block.text), ""]
            elif isinstance(block, Table):
                lines += _table(block.head, block.rows)
            elif isinstance(block, Callout):
                lines += [f"**{md_text(block.label)}**", "", *(f"- {md_text(i)}" for i in block.items), ""]
            elif isinstance(block, SampleList):
                lines += _samples(block, len("\n".join(lines)), limit)
            elif not isinstance(block, CHARTS):
                raise TypeError(f"render_markdown: no rendering for {type(block).__name__}")
            # Charts are left out: the UI's Markdown shows no images; the numbers are in the tables.
    return "\n".join(lines).rstrip() + "\n"


def render_markdown(results: Results, *, max_samples: int = DEFAULT_SAMPLES,
                    limit: int = MARKDOWN_LIMIT) -> str:
    """The Markdown report; never longer than ``limit``."""
    return render_sections(build_sections(results, max_samples=max_samples), limit=limit)
