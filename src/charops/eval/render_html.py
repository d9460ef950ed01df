"""The HTML report (``report.html``), rendered from :mod:`charops.eval.sections`.

    from charops.eval.render_html import render_html
    from charops.eval.summary import load_results
    page = render_html(load_results("runs/eval"))

For the Kubeflow UI's HTML artifact viewer (a sandboxed iframe): the same sections as the
Markdown report, with inline SVG charts (stacked win/tie/lose bars, point-wise scores with CI
whiskers) and sample replies side by side; no script, no external font or stylesheet, no
base64 image (the iframe shows none of those), and a Content-Security-Policy that forbids
them. All text from models, datasets and judges is escaped.
"""

from __future__ import annotations

import html
import re
from typing import Any

from charops.eval.sections import (
    DEFAULT_SAMPLES,
    REPLY_CHARS,
    Callout,
    Paragraph,
    SampleList,
    ScoreChart,
    Section,
    Table,
    WinTieLoseChart,
    build_sections,
    ci,
    cut,
    p_value,
    pct,
    signed,
)
from charops.eval.summary import Results


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2430;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
h3{font-size:15px}p{color:#4a5568;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #d8dde6;padding:3px 8px;text-align:left}
td.num{text-align:right;white-space:nowrap}
.callout{background:#fff7e6;border:1px solid #f0c36d;padding:8px 12px}
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


def _legend(items: list[tuple[str, str]]) -> str:
    """(text, colour key) pairs as a row of swatches."""
    return '<p class="legend">' + "".join(
        f'<span><i style="background:{COLORS.get(key, "#868e96")}"></i>{esc(text)}</span>'
        for text, key in items) + "</p>"


def _win_tie_lose(chart: WinTieLoseChart) -> str:
    """Horizontal 100% bars of win/tie/lose per row, Advantage and n written beside them."""
    label_w, bar_w, right_w, row_h = 190, 420, 230, 26
    height = row_h * len(chart.rows) + 24
    parts = [_legend([("win", "win"), ("tie", "tie"), ("lose", "lose")]),
             f'<svg class="chart {esc(chart.name)}" role="img" width="{label_w + bar_w + right_w}" '
             f'height="{height}" viewBox="0 0 {label_w + bar_w + right_w} {height}" '
             'xmlns="http://www.w3.org/2000/svg" font-size="12">']
    for i, (label, b) in enumerate(chart.rows):
        y = 4 + i * row_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{esc(label)}</text>')
        x = float(label_w)
        for part in ("win", "tie", "lose"):
            share = b.get(part)
            w = bar_w * max(0.0, float(share if isinstance(share, (int, float)) else 0.0)) / 100.0
            parts.append(f'<rect class="bar {part}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                         f'height="{row_h - 6}" fill="{COLORS[part]}"><title>{esc(label)}: '
                         f'{part} {pct(share)}%</title></rect>')
            if w >= 34:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 15}" text-anchor="middle" '
                             f'fill="#fff">{pct(share)}</text>')
            x += w
        parts.append(f'<text x="{label_w + bar_w + 8}" y="{y + 15}">Adv {signed(b.get("advantage"))}'
                     f' · n {esc(b.get("n", "–"))} · p {esc(p_value(b.get("sign_test_p")))}</text>')
    axis_y = 4 + len(chart.rows) * row_h + 12
    for tick in (0, 25, 50, 75, 100):
        tx = label_w + bar_w * tick / 100
        parts.append(f'<text x="{tx:.0f}" y="{axis_y}" text-anchor="middle" fill="#718096">{tick}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def _scores(chart: ScoreChart) -> str:
    """Grouped bars: each model's mean per dimension on the 1-5 scale, with CI whiskers."""
    dims, models = chart.dimensions, chart.models
    bar_w = 30 if len(models) <= 2 else max(8, 84 // len(models))
    group_w, left, top, plot_h = max(96, bar_w * len(models) + 12), 40, 10, 200
    width = left + group_w * max(1, len(dims)) + 10
    height = top + plot_h + 40

    def y_of(score: float) -> float:  # 1 at the bottom, 5 at the top
        return top + plot_h * (1 - (min(max(score, 1.0), 5.0) - 1) / 4)

    parts = [_legend([(label, role) for role, label, _ in models]),
             f'<svg class="chart pointwise" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    for tick in range(1, 6):
        ty = y_of(tick)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e2e8f0"/>'
                     f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="#718096">{tick}</text>')
    for d, dim in enumerate(dims):
        gx = left + d * group_w + (group_w - bar_w * len(models)) / 2
        for m, (role, label, side) in enumerate(models):
            block = (side.get("overall") or {}).get(dim) or {}
            if not isinstance(block.get("mean"), (int, float)):
                continue
            x, y = gx + m * bar_w, y_of(block["mean"])
            parts.append(f'<rect class="bar score {role}" x="{x:.1f}" y="{y:.1f}" width="{bar_w - 4}" '
                         f'height="{top + plot_h - y:.1f}" fill="{COLORS.get(role, "#868e96")}">'
                         f'<title>{esc(label)} {esc(dim)}: {block["mean"]:.2f} '
                         f'{ci(block.get("ci95"))} n={esc(block.get("n", "–"))}</title></rect>')
            interval = block.get("ci95")
            if ci(interval) != "–":
                cx = x + (bar_w - 4) / 2
                parts.append(f'<line class="ci" x1="{cx:.1f}" x2="{cx:.1f}" y1="{y_of(interval[0]):.1f}" '
                             f'y2="{y_of(interval[1]):.1f}" stroke="#1a202c" stroke-width="1.5"/>')
        parts.append(f'<text x="{left + d * group_w + group_w / 2:.1f}" y="{top + plot_h + 16}" '
                     f'text-anchor="middle">{esc(dim)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_NUMERIC = re.compile(r"^[-+<\[–]*[\d–]")


def _table(table: Table) -> str:
    out = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in table.head), "</tr>"]
    for r in table.rows:
        out += ["<tr>", *(f'<td class="num">{esc(c)}</td>' if _NUMERIC.match(str(c))
                          else f"<td>{esc(c)}</td>" for c in r), "</tr>"]
    out.append("</table>")
    return "".join(out)


def _samples(block: SampleList) -> str:
    shown = block.samples[:block.limit]
    out = [f"<p>{len(shown)} of {len(block.samples)} prompts shown, replies cut at {REPLY_CHARS} "
           "characters; every reply is in replies.jsonl.</p>"]
    for i, s in enumerate(shown, 1):
        cards = []
        for role, label, _ in block.models:
            text = s.replies.get(label, "")
            cards.append(f'<div class="reply {esc(role)}"><h4>{esc(s.notes(role, label))}</h4>'
                         + (esc(cut(text)) if text else '<i class="empty">(empty reply)</i>') + "</div>")
        out.append(f'<div class="sample"><h3>{esc(s.title(i))}</h3><p class="context"><b>user:</b> '
                   f'{esc(cut(s.user_turn()))}</p><div class="pair">{"".join(cards)}</div>'
                   + (f'<p class="reference"><b>reference:</b> {esc(cut(s.reference))}</p>'
                      if s.reference is not None else "") + "</div>")
    return "\n".join(out)


def _block(block: Any) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Callout):
        return (f'<div class="callout"><b>{esc(block.label)}</b><ul>'
                + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul></div>")
    if isinstance(block, WinTieLoseChart):
        return _win_tie_lose(block)
    if isinstance(block, ScoreChart):
        return _scores(block)
    if isinstance(block, SampleList):
        return _samples(block)
    raise TypeError(f"render_html: no rendering for {type(block).__name__}")


def render_sections(sections: list[Section]) -> str:
    body = []
    for section in sections:
        body.append(f"<h{section.level}>{esc(section.title)}</h{section.level}>")
        body += [_block(b) for b in section.blocks]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">"
            "<title>charops evaluation</title><style>" + _CSS.strip() + "</style></head><body>"
            + "\n".join(body) + "\n</body></html>\n")


def render_html(results: Results, *, max_samples: int = DEFAULT_SAMPLES) -> str:
    """The HTML report: one self-contained page."""
    return render_sections(build_sections(results, max_samples=max_samples))
