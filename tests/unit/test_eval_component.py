"""The evaluate component alone under kfp.local, and `charops eval run` on the micro model.

    .venv/bin/python -m pytest tests/unit/test_eval_component.py -x -q

The component runs from a one-step pipeline whose inputs are ``dsl.importer`` artifacts of
local folders (as in tests/unit/test_component_steps.py): the micro model as candidate, its
twin with other weights as baseline, and a reward model trained here for three steps.
"""

# No `from __future__ import annotations`: KFP reads the pipelines' return annotations as types.
import json
import re
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl, local
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model
from typer.testing import CliRunner

EVAL = ["max_prompts=4", "max_new_tokens=4", "bootstrap_resamples=50", "batch_size=4"]


@pytest.fixture
def reward_dir(micro_reward_model_dir) -> Path:
    return micro_reward_model_dir


def _imported(path: Path, cls: type):
    return dsl.importer(artifact_uri=str(path), artifact_class=cls, reimport=False).output


@pytest.mark.slow
def test_evaluate_component_generates_judges_and_reports(tmp_path, micro_model_dir, micro_ref_model_dir,
                                                         eval_dataset_dir, reward_dir):
    from charops.components.evaluate.component import evaluate
    from charops.eval.report import headline_metrics

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=True)

    class Out(NamedTuple):
        results: Artifact
        metrics: Metrics
        report: Markdown
        html_report: HTML

    @dsl.pipeline(name="one-evaluate")
    def one() -> Out:
        t = evaluate(model=_imported(micro_model_dir, Model), dataset=_imported(eval_dataset_dir, Dataset),
                     baseline=_imported(micro_ref_model_dir, Model),
                     reward_model=_imported(reward_dir, Model), judge="reward_model",
                     config="default", overrides=EVAL)
        return Out(t.outputs["results"], t.outputs["metrics"], t.outputs["report"], t.outputs["html_report"])

    out = one().outputs
    results = Path(out["results"].path)
    assert {"replies.jsonl", "pointwise.jsonl", "pairwise.jsonl", "eval_summary.json", "report.md",
            "report.html", "headline.json", "metrics.json"} <= {p.name for p in results.iterdir()}
    summary = json.loads((results / "eval_summary.json").read_text())
    # The artifacts' paths reached the stage, not the preset's runs/... defaults.
    assert summary["candidate"]["model"] == str(micro_model_dir)
    assert summary["baseline"]["model"] == str(micro_ref_model_dir)
    assert summary["config"]["reward_model"] == str(reward_dir) and summary["config"]["progress"] is False
    assert summary["judge"]["kind"] == "reward_model" and summary["counts"]["prompts"] == 4
    assert out["results"].metadata["judge"] == "reward_model"
    manifest = json.loads((eval_dataset_dir / "manifest.json").read_text())
    assert out["results"].metadata["dataset_sha256"] == manifest["content_sha256"]
    assert out["metrics"].metadata == pytest.approx(headline_metrics(summary))
    assert out["metrics"].metadata["pairwise_n"] + summary["pairwise"]["overall"]["unjudged"] == 4
    assert Path(out["report"].path).read_text() == (results / "report.md").read_text()
    assert Path(out["html_report"].path).read_text() == (results / "report.html").read_text()
    assert "Judge: reward model, model " + str(reward_dir) in (results / "report.md").read_text()


def test_cli_eval_run_writes_results_and_reports(tmp_path, micro_model_dir, micro_ref_model_dir,
                                                 eval_dataset_dir):
    from charops.cli.main import app

    out = tmp_path / "eval"
    args = ["eval", "run", f"model={micro_model_dir}", f"baseline_model={micro_ref_model_dir}",
            f"dataset={eval_dataset_dir}", f"output_dir={out}", "judge=none", *EVAL]
    result = CliRunner().invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    assert result.output == ""  # -q: errors only (no progress bars, no headline)
    result = CliRunner().invoke(app, ["eval", "report", str(out)])  # the headline it would print
    assert result.exit_code == 0, result.output
    assert "judge: no judge" in result.output
    assert "skipped: point-wise and pair-wise judging: no judge configured (judge=none)" in result.output
    assert re.search(r"loss \d+\.\d{4}  \(baseline \d+\.\d{4}\)", result.output)
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert json.loads((out / "eval_summary.json").read_text())["config"]["progress"] is False

    again = CliRunner().invoke(app, [*[a.replace(str(out), str(tmp_path / "e2")) for a in args], "--json"])
    assert again.exit_code == 0, again.output
    assert "generating (candidate)" in again.output  # progress bars by default (stderr)
    assert json.loads((tmp_path / "e2" / "eval_summary.json").read_text())["judge"]["kind"] == "none"

    bad = CliRunner().invoke(app, ["eval", "run", f"model={micro_model_dir}", "judge=oracle", "-q"])
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and "judge" in bad.output


@pytest.mark.slow
def test_evaluate_component_takes_production_as_the_baseline(tmp_path, micro_model_dir,
                                                            micro_ref_model_dir, eval_dataset_dir):
    """baseline_policy=production: the registry's production model replaces the given baseline
    (so the promotion gate's "baseline = production" check can pass); with no production
    version, or with baseline_policy=given, the given baseline stays."""
    from charops.components.evaluate.component import evaluate
    from charops.registry import register
    from charops.registry.stages import transition
    from charops.storage import open_store

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=True)
    store_dir = str(tmp_path / "store")

    @dsl.pipeline(name="one-evaluate-against")
    def one(policy: str) -> Artifact:
        return evaluate(model=_imported(micro_model_dir, Model), dataset=_imported(eval_dataset_dir, Dataset),
                        baseline=_imported(micro_model_dir, Model), judge="none", config="default",
                        overrides=[*EVAL[:2], "heldout_max_examples=2"], baseline_policy=policy,
                        model_name="charops-chat", store=store_dir).outputs["results"]

    def baseline_of(policy: str) -> str:
        results = Path(one(policy=policy).output.path)
        return json.loads((results / "eval_summary.json").read_text())["baseline"]["model"]

    assert baseline_of("production") == str(micro_model_dir)  # no production version yet
    store = open_store(store_dir)
    entry = register(store, micro_ref_model_dir, "charops-chat", {}, {"base_model": "test"})
    transition(store, "charops-chat", entry["version"], "production", actor="test", reason="test",
               force=True)
    assert baseline_of("production") == entry["model_uri"]
    assert baseline_of("given") == str(micro_model_dir)
