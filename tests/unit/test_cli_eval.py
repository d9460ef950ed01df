"""`charops eval report|export-human|import-human` through the CLI (typer's CliRunner).

    .venv/bin/python -m pytest tests/unit/test_cli_eval.py -x -q
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from charops.cli.main import app

RESULTS = Path(__file__).parent / "eval_fixtures" / "results"
GOLDEN = Path(__file__).parent / "golden" / "eval_report.md"


def test_report_rerenders_every_output(tmp_path):
    shutil.copytree(RESULTS, tmp_path / "r")
    result = CliRunner().invoke(app, ["eval", "report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "pair-wise vs baseline: win 60.0%  tie 20.0%  lose 20.0%  Advantage +40.0" in result.output
    assert "judge: reward model, model runs/reward/model, rubric characterglm-v1" in result.output
    assert (tmp_path / "r" / "report.md").read_text() == GOLDEN.read_text()
    assert (tmp_path / "r" / "report.html").is_file()
    assert json.loads((tmp_path / "r" / "headline.json").read_text())["pairwise_advantage"] == 40.0

    result = CliRunner().invoke(app, ["eval", "report", str(RESULTS), "--out", str(tmp_path / "o"),
                                      "--samples", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["headline"]["pairwise_n"] == 5.0
    assert "2 of 6 prompts shown" in (tmp_path / "o" / "report.md").read_text()


def test_report_of_a_folder_without_results_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["eval", "report", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no eval_summary.json" in lines[0]


def test_human_round_trip_through_the_cli(tmp_path):
    tasks = tmp_path / "tasks"
    result = CliRunner().invoke(app, ["eval", "export-human", str(RESULTS), "--out", str(tasks),
                                      "--task", "pairwise", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "6 pairwise" in result.output and "tasks.key.json" in result.output
    assert sorted(p.name for p in tasks.iterdir()) == ["instructions.md", "pairwise.csv", "pairwise.jsonl"]
    key = json.loads((tmp_path / "tasks.key.json").read_text())
    with (tasks / "pairwise.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Two annotators who both pick whichever reply the baseline wrote.
    for name in ("ann1", "ann2"):
        with (tmp_path / f"{name}.csv").open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                first = key["tasks"]["pairwise"][row["task_id"]]["first"]
                writer.writerow({**row, "preference": "1" if first == "baseline" else "2"})
    result = CliRunner().invoke(app, ["eval", "import-human", str(tmp_path / "tasks.key.json"),
                                      str(tmp_path / "ann1.csv"), str(tmp_path / "ann2.csv"),
                                      "--out", str(tmp_path / "human")])
    assert result.exit_code == 0, result.output
    assert "win 0.0%  tie 0.0%  lose 100.0%  Advantage -100.0" in result.output
    assert "skipped: pointwise: no ratings imported" in result.output
    summary = json.loads((tmp_path / "human" / "eval_summary.json").read_text())
    assert summary["agreement"]["pairwise"]["percent_agreement"] == 100.0

    result = CliRunner().invoke(app, ["eval", "import-human", str(tmp_path / "tasks.key.json"),
                                      str(tmp_path / "ann1.csv"), "--out", str(tmp_path / "human")])
    assert result.exit_code == 2 and "not empty" in result.output
