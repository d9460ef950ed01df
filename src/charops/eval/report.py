"""Evaluation reports: Markdown for the Kubeflow UI, a self-contained HTML page, headline numbers.

Everything is rendered from an eval results directory (``eval_summary.json`` plus the records
``replies.jsonl``, ``pointwise.jsonl``, ``pairwise.jsonl`` the eval stage writes), so a report
can be redone without generating or judging again::

    charops eval report runs/eval        # -> report.md, report.html, headline.json, metrics.json
    python -c "from charops.eval.report import write_reports; write_reports('runs/eval')"

The work is split by job; this module ties it together:

- :mod:`charops.eval.summary` reads the results directory (the one ``eval_summary.json`` reader);
- :mod:`charops.eval.sections` builds what the reports say, once: CharacterGLM's Table 4
  (point-wise mean and 95% CI per dimension and model), Tables 7 and 8 (pair-wise win/tie/lose
  %, Advantage = win - lose, the sign test's p and the bootstrap interval of Advantage, per
  character category and dialogue topic), the candidate against further models, Bradley-Terry
  scores, agreement and the Turing test (people as judge), automatic signals, sample replies.
  Every table names the judge; skipped parts are stated with their reason;
- :mod:`charops.eval.render_md` renders them to ``report.md`` (no HTML, under the UI's ~400k
  character limit) and :mod:`charops.eval.render_html` to ``report.html`` (inline SVG charts,
  no script, a Content-Security-Policy that forbids external content), so the two show the
  same sections and tables;
- :mod:`charops.eval.metrics`: ``headline.json`` (the few scalars the KFP ``Metrics``
  artifact shows) and ``metrics.json`` (what the ``register`` step files with the registry
  entry: ``model.*``, ``baseline.*``).
"""

from __future__ import annotations

from pathlib import Path

from charops.eval.metrics import headline_metrics, registry_metrics
from charops.eval.render_html import render_html
from charops.eval.render_md import MARKDOWN_LIMIT, md_text, render_markdown
from charops.eval.sections import DEFAULT_SAMPLES, REPLY_CHARS, judge_text, samples
from charops.eval.summary import SCHEMA as SUMMARY_SCHEMA
from charops.eval.summary import Results, load_results
from charops.io import write_json, write_text

__all__ = ["DEFAULT_SAMPLES", "MARKDOWN_LIMIT", "REPLY_CHARS", "SUMMARY_SCHEMA", "Results",
           "headline_metrics", "judge_text", "load_results", "md_text", "registry_metrics",
           "render_html", "render_markdown", "samples", "write_reports"]


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
