"""The KFP components under kfp.local, and the local runner that `charops submit --local` uses.

    .venv/bin/python -m pytest tests/unit/test_components.py -x -q

The component tests chain the real components on the micro model with a few training steps:
each checks its artifact (a loadable model, a prepared dataset, metrics, reports, a registry
entry in a store), not just that the step ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charops.errors import CharopsError

FIXTURES = Path(__file__).parent / "kfp_fixtures"


# --- the local runner on a two-step pipeline (fast: no training) ----------------------------


@pytest.fixture(scope="module")
def two_steps_yaml(tmp_path_factory) -> Path:
    import importlib.util

    from kfp import compiler

    from charops.pipeline.version import stamp

    spec = importlib.util.spec_from_file_location("charops_tests_two_steps", FIXTURES / "two_steps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("two_steps") / "two_steps.yaml"
    compiler.Compiler().compile(module.two_steps, str(out))
    out.write_text(stamp(out.read_text()), encoding="utf-8")
    return out


def test_run_local_runs_the_yaml_and_finds_every_output(two_steps_yaml, tmp_path):
    from charops.pipeline.local import run_local

    result = run_local(two_steps_yaml, ["text=quiet words"], runs_dir=tmp_path, run_name="r1",
                       defaults={"pipeline_version": "v-test", "not_a_param": 1})
    assert result.status == "succeeded" and result.error is None
    assert result.params == {"text": "quiet words", "pipeline_version": "v-test"}
    assert result.output("shout", "loud").read_text() == "QUIET WORDS"
    assert result.output("write-text", "out").read_text() == "quiet words"
    assert set(result.task_seconds) == {"write-text", "shout"}
    assert all(0 < s < result.seconds for s in result.task_seconds.values())
    summary = json.loads((tmp_path / "r1" / "run.json").read_text())
    assert summary["outputs"]["shout"]["loud"] == str(result.output("shout", "loud"))
    assert summary["version"] == result.version and result.version.startswith("0.1.0-")
    with pytest.raises(CharopsError, match="r1' exists and is not empty; remove it or choose another --run-name"):
        run_local(two_steps_yaml, [], runs_dir=tmp_path, run_name="r1")


def test_run_local_reports_the_failing_task_and_its_exception(two_steps_yaml, tmp_path):
    from charops.pipeline.local import run_local

    result = run_local(two_steps_yaml, ["fail=true"], runs_dir=tmp_path, run_name="bad")
    assert result.status == "failed"
    assert result.error == "task 'shout' failed: ValueError: the source was too quiet"
    assert "write-text" in result.outputs and "loud" not in result.outputs.get("shout", {})
    assert json.loads((tmp_path / "bad" / "run.json").read_text())["status"] == "failed"


def test_local_runs_skip_retries_unless_asked(two_steps_yaml, tmp_path):
    """The cluster's retry policy (here 2 retries) is dropped locally by default."""
    from charops.pipeline.local import run_local

    once, thrice = tmp_path / "once.txt", tmp_path / "thrice.txt"
    result = run_local(two_steps_yaml, ["fail=true", f"attempts_file={once}"], runs_dir=tmp_path,
                       run_name="no-retry")
    assert result.status == "failed" and once.read_text().count("attempt") == 1
    result = run_local(two_steps_yaml, ["fail=true", f"attempts_file={thrice}"],
                       runs_dir=tmp_path, run_name="retry", retries=True)
    assert result.status == "failed" and thrice.read_text().count("attempt") == 3


def test_run_local_checks_parameters_before_running(two_steps_yaml, tmp_path):
    from charops.pipeline.local import run_local

    with pytest.raises(CharopsError, match="has no parameter 'nope'"):
        run_local(two_steps_yaml, ["nope=1"], runs_dir=tmp_path)
    with pytest.raises(CharopsError, match="expected true or false"):
        run_local(two_steps_yaml, ["fail=maybe"], runs_dir=tmp_path)
    with pytest.raises(CharopsError, match="run name"):
        run_local(two_steps_yaml, [], runs_dir=tmp_path, run_name="../escape")
    assert not any(tmp_path.iterdir())  # nothing was started


def test_submit_local_prints_one_line_per_step_and_keeps_the_logs(two_steps_yaml, tmp_path):
    from typer.testing import CliRunner

    from charops.cli.main import app
    from charops.pipeline.version import read_version

    res = CliRunner().invoke(app, ["submit", str(two_steps_yaml), "--local", "--runs-dir", str(tmp_path),
                                   "--run-name", "quiet"])
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "quiet"
    lines = res.stderr.splitlines()
    assert lines[0] == f"run quiet: two-steps {read_version(two_steps_yaml)}, step logs in {run_dir / 'logs'}/"
    assert [line.split()[:2] for line in lines[1:]] == [["write-text", "succeeded"], ["shout", "succeeded"]]
    assert lines[2].endswith("s  loss 0.625")  # shout's final_loss: len("hello") / 8
    assert "executor_input" not in res.output and "step 1/2" not in res.output
    logs = {p.name: p.read_text() for p in (run_dir / "logs").iterdir()}
    assert {"write-text.log", "shout.log"} <= set(logs)
    assert "Got executor_input" in logs["shout.log"] and "step 1/2 loss=2.5000" in logs["shout.log"]
    assert "step 1/2" not in logs["write-text.log"] and "Executing task 'write-text'" in logs["write-text.log"]
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["logs"] == {name: str(run_dir / "logs" / f"{name}.log") for name in ("pipeline", "write-text", "shout")}
    # The last screen is the headline: paths stay in run.json and --verbose (issue 15).
    assert "(log)" not in res.stdout and f"details (every path, each step's time and log): {run_dir / 'run.json'}" \
        in res.stdout


def test_submit_local_verbose_streams_the_logs_and_a_failure_names_its_log(two_steps_yaml, tmp_path):
    from typer.testing import CliRunner

    from charops.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["submit", str(two_steps_yaml), "--local", "--runs-dir", str(tmp_path),
                              "--run-name", "loud", "--verbose"])
    assert res.exit_code == 0, res.output
    assert "Got executor_input" in res.stderr and "step 1/2 loss=2.5000" in res.stderr
    assert (tmp_path / "loud" / "logs" / "shout.log").read_text().count("step 1/2 loss=2.5000") == 1
    assert f"(log)          {tmp_path / 'loud' / 'logs' / 'shout.log'}" in res.stdout  # every path with --verbose

    res = runner.invoke(app, ["submit", str(two_steps_yaml), "--local", "--runs-dir", str(tmp_path),
                              "--run-name", "bad", "-p", "fail=true"])
    assert res.exit_code == 2
    shout = [line for line in res.stderr.splitlines() if line.split()[:1] == ["shout"]]
    assert len(shout) == 1 and shout[0].split()[1] == "failed"
    assert shout[0].endswith("ValueError: the source was too quiet")
    log = tmp_path / "bad" / "logs" / "shout.log"
    assert f"task 'shout' failed: ValueError: the source was too quiet (full log: {log})" in res.stderr
    assert "Traceback" in log.read_text() and "Traceback" not in res.output

    # -q: errors only (no live view, no summary), the logs still kept.
    res = runner.invoke(app, ["submit", str(two_steps_yaml), "--local", "--runs-dir", str(tmp_path),
                              "--run-name", "hush", "-q"])
    assert res.exit_code == 0 and res.output == ""
    assert (tmp_path / "hush" / "logs" / "shout.log").is_file()
    res = runner.invoke(app, ["submit", str(two_steps_yaml), "--local", "--runs-dir", str(tmp_path),
                              "--run-name", "hush-bad", "-p", "fail=true", "-q"])
    assert res.exit_code == 2 and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and "the source was too quiet" in line


def test_live_view_rewrites_the_running_line_on_a_terminal():
    import io

    from charops.pipeline.local import LiveView

    out = io.StringIO()
    view = LiveView(out, headline=lambda task: "loss 1.5", tty=True)
    view.started("sft")
    view.progress("sft", "step 3/20 loss=2.1")
    view.ended("sft", True, 12.34)
    view.started("dpo")
    view.ended("dpo", False, 1.0, "DataError: no pairs")
    assert out.getvalue() == ("\r\x1b[K  sft           running\r\x1b[K  sft           running   step 3/20 loss=2.1"
                              "\r\x1b[K  sft           succeeded    12.3s  loss 1.5\n"
                              "\r\x1b[K  dpo           running"
                              "\r\x1b[K  dpo           failed        1.0s  DataError: no pairs\n")
    plain = io.StringIO()
    view = LiveView(plain, headline=lambda task: "", tty=False)
    view.started("sft")
    view.progress("sft", "step 3/20 loss=2.1")
    view.ended("sft", True, 2.0)
    assert plain.getvalue() == "  sft           succeeded     2.0s\n"


def test_headline_prefers_metrics_and_reads_kfp_local_numbers():
    from charops.pipeline.local import headline

    def out(artifacts=None, params=None):
        return {"artifacts": {name: {"artifacts": [{"metadata": meta}]} for name, meta in (artifacts or {}).items()},
                "parameterValues": params or {}}

    training = out({"trained_model": {"sha256": "ab" * 32, "stage": "sft"},
                    "metrics": {"final_loss": 2.345678, "steps": 20.0}})
    assert headline(training) == "loss 2.346"
    assert headline(out({"metrics": {"counts.accepted": 230.0, "tokens.total": 9.0}})) == "records 230"
    assert headline(out({"entry": {"name": "m"}}, {"version": 3.0, "model_uri": "s3://x"})) == "version 3"
    assert headline(out({"model": {"sha256": "0123456789abcdef" * 4}})) == "sha256 0123456789ab"
    assert headline(out({"metrics": {"loss": 1.0, "ok": True}})) == "loss 1"
    assert headline(out({"out": {}})) == ""


# --- component plumbing (no KFP) -------------------------------------------------------------


def test_stage_config_sets_paths_and_refuses_overriding_them():
    from charops.components.common import stage_config
    from charops.eval.heldout import HeldoutEvalConfig
    from charops.train.sft import SFTConfig

    # HeldoutEvalConfig requires model and dataset: they come from the artifacts.
    cfg = stage_config(HeldoutEvalConfig, "heldout", ["num_samples=1"], model="/a: b/m",
                       dataset="/d", output_dir="/o")
    assert (cfg.model, cfg.dataset, cfg.output_dir, cfg.num_samples) == ("/a: b/m", "/d", "/o", 1)
    cfg = stage_config(SFTConfig, "tiny-cpu", ["max_steps=3", "lora.r=4"], model="/m",
                       dataset="/d", output_dir="/o")
    assert (cfg.max_steps, cfg.lora.r, cfg.model) == (3, 4, "/m")
    assert stage_config(SFTConfig, "", [], model="/m").max_steps == SFTConfig().max_steps
    with pytest.raises(CharopsError, match="'output_dir' is set by the pipeline"):
        stage_config(SFTConfig, "tiny-cpu", ["output_dir=/elsewhere"], output_dir="/o")
    with pytest.raises(CharopsError, match="unknown key 'max_stepz'; did you mean 'max_steps'"):
        stage_config(SFTConfig, "tiny-cpu", ["max_stepz=3"], model="/m")


def test_metrics_helpers_keep_finite_numbers_only(tmp_path):
    from kfp import dsl

    from charops.components.common import (
        describe_model,
        log_metrics,
        numeric_leaves,
        summary_markdown,
    )
    from charops.io import sha256_tree, write_text

    summary = {"steps": 3, "final_loss": 1.5, "ok": True, "name": "x", "nan": float("nan"),
               "eval": {"eval_loss": 2.25, "curve": [1, 2]}}
    assert numeric_leaves(summary) == {"steps": 3.0, "final_loss": 1.5, "eval.eval_loss": 2.25}

    m = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    assert log_metrics(m, summary, keys=["steps"]) == {"steps": 3.0}
    assert m.metadata == {"steps": 3.0}
    log_metrics(m, summary)
    assert m.metadata == {"steps": 3.0, "final_loss": 1.5, "eval.eval_loss": 2.25}

    write_text(tmp_path / "model" / "config.json", "{}")
    model = dsl.Model(name="model", uri=str(tmp_path / "model"))
    assert describe_model(model, model.path, stage="sft") == sha256_tree(tmp_path / "model")
    assert model.metadata == {"sha256": sha256_tree(tmp_path / "model"), "stage": "sft"}
    text = summary_markdown("T", summary, {"lr": 0.1})
    assert "| eval.eval_loss | 2.25 |" in text and '"lr": 0.1' in text and "nan" not in text


# --- the real components, chained by the full pipeline on the micro model --------------------

# The micro model with room for the bundled dialogues (its preset stops at 512 positions; the
# data preset's max_seq_len is 1536, and data prepare refuses a max_seq_len above the model's).
MICRO = ['model_config=micro', 'model_overrides=["max_position_embeddings=2048"]',
         'data_overrides=["progress=false", "validation_fraction=0.2"]',
         'pretrain_overrides=["max_steps=2", "per_device_train_batch_size=2"]',
         'sft_overrides=["max_steps=2", "per_device_train_batch_size=2"]',
         'dpo_overrides=["max_steps=2", "per_device_train_batch_size=2"]',
         'reward_overrides=["max_steps=2", "per_device_train_batch_size=2"]',
         'eval_overrides=["max_prompts=2", "max_new_tokens=4", "heldout_max_examples=8", '
         '"bootstrap_resamples=50"]',
         'model_name=micro-chat']
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    from charops.pipeline.local import run_local

    work = tmp_path_factory.mktemp("components")
    result = run_local(ROOT / "pipelines" / "full.yaml", [*MICRO, f"store={work / 'store'}"],
                       runs_dir=work / "runs", run_name="micro",
                       defaults={"pipeline_version": "test-version"})
    assert result.status == "succeeded", result.error
    return result, work


@pytest.mark.slow
def test_base_model_and_data_prep_artifacts(micro_run):
    from charops.io import sha256_tree
    from charops.model import tokenizer_sha256

    result, _ = micro_run
    model = result.output("base-model", "model")
    meta = result.metadata["base-model"]["model"]
    assert json.loads((model / "config.json").read_text())["hidden_size"] == 32  # micro preset
    assert meta["sha256"] == sha256_tree(model)
    assert (meta["base_model"], meta["config"]) == ("charops:tiny", "micro")

    dataset = result.output("data-prep", "dataset")
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == tokenizer_sha256(model)
    assert manifest["config"]["validation_fraction"] == 0.2  # the override reached the stage
    numbers = result.metadata["data-prep"]["metrics"]
    assert numbers["counts.sft.train"] == manifest["counts"]["sft"]["train"] > 0
    assert numbers["counts.accepted"] == manifest["counts"]["accepted"]
    assert result.metadata["data-prep"]["dataset"]["content_sha256"] == manifest["content_sha256"]
    assert "# Prepared dataset" in result.output("data-prep", "summary").read_text()


@pytest.mark.slow
def test_training_components_chain_models_and_report_numbers(micro_run):
    from charops.io import sha256_tree

    result, _ = micro_run
    previous = result.output("base-model", "model")
    for stage in ("pretrain", "sft", "dpo"):
        model = result.output(stage, "trained_model")
        summary = json.loads((model / "training_summary.json").read_text())
        assert summary["config"]["model"] == str(previous)  # trained on the previous output
        assert summary["config"]["max_steps"] == 2 and summary["steps"] == 2
        numbers = result.metadata[stage]["metrics"]
        assert numbers["steps"] == 2 and numbers["final_loss"] == pytest.approx(summary["final_loss"])
        assert "config.learning_rate" not in numbers  # inputs are not metrics
        meta = result.metadata[stage]["trained_model"]
        assert meta["stage"] == stage and meta["sha256"] == sha256_tree(model)
        assert meta["sha256"] != sha256_tree(previous)  # the weights changed
        report = result.output(stage, "report").read_text()
        assert "| steps | 2 |" in report and '"max_steps": 2' in report
        previous = model
    dpo = json.loads((result.output("dpo", "trained_model") / "training_summary.json").read_text())
    assert dpo["config"]["ref_model"] == str(result.output("sft", "trained_model"))


@pytest.mark.slow
def test_evaluate_and_register_components(micro_run):
    from charops.io import sha256_tree
    from charops.registry import get_entry
    from charops.storage import LocalStore

    result, work = micro_run
    results = result.output("evaluate", "results")
    metrics = json.loads((results / "metrics.json").read_text())
    summary = json.loads((results / "eval_summary.json").read_text())
    numbers = result.metadata["evaluate"]["metrics"]
    assert numbers["loss"] == pytest.approx(metrics["model"]["loss"])
    assert numbers["baseline_loss"] == pytest.approx(metrics["baseline"]["loss"])
    assert numbers["loss_delta"] == pytest.approx(metrics["model"]["loss"] - metrics["baseline"]["loss"])
    assert summary["config"]["heldout_max_examples"] == 8 and summary["counts"]["prompts"] == 2
    # The reward step's model judged (the judge parameter's default).
    assert summary["judge"]["kind"] == "reward_model"
    assert summary["config"]["reward_model"] == str(result.output("reward", "trained_model"))
    assert numbers["pairwise_n"] + summary["pairwise"]["overall"]["unjudged"] == 2
    assert result.output("evaluate", "report").read_text() == (results / "report.md").read_text()
    assert result.output("evaluate", "html_report").read_text() == (results / "report.html").read_text()

    entry = get_entry(LocalStore(work / "store"), "micro-chat")
    assert entry["version"] == 1 == result.parameters["register"]["version"]
    assert entry["model_sha256"] == sha256_tree(result.output("dpo", "trained_model"))
    assert entry["lineage"]["pipeline_version"] == "test-version"
    assert entry["lineage"]["base_model"] == "charops:tiny" and entry["lineage"]["run_id"]
    assert entry["metrics"]["model.loss"] == pytest.approx(numbers["loss"])
    assert json.loads(result.output("register", "entry").read_text()) == entry
    assert "# micro-chat v1" in result.output("register", "report").read_text()


@pytest.mark.slow
def test_base_model_copies_a_model_directory(micro_run, tmp_path):
    """eval_only resolves its `model` parameter through base_model: a directory is copied."""
    from charops.io import sha256_tree
    from charops.pipeline.local import run_local

    result, _ = micro_run
    final = result.output("dpo", "trained_model")
    again = run_local(ROOT / "pipelines" / "eval_only.yaml",
                      [f"model={final}", f"baseline_model={result.output('base-model', 'model')}",
                       'model_overrides=["max_position_embeddings=2048"]',
                       'data_overrides=["progress=false", "validation_fraction=0.2"]',
                       'judge=none',
                       'eval_overrides=["max_prompts=2", "max_new_tokens=4", "heldout_max_examples=8"]'],
                      runs_dir=tmp_path, run_name="eval")
    assert again.status == "succeeded", again.error
    copied = again.output("base-model", "model")
    assert copied != final and sha256_tree(copied) == sha256_tree(final)
    assert again.metadata["base-model"]["model"]["base_model"] == str(final)
    # judge=none: the evaluation without a reward model (the Else branch's task) ran.
    assert again.metadata["evaluate-2"]["metrics"]["loss"] == pytest.approx(
        result.metadata["evaluate"]["metrics"]["loss"], rel=1e-6)


# --- charops submit to a cluster: a stand-in KFP API server (see test_pipeline_client.py) ----


@pytest.fixture
def kfp_server():
    from test_pipeline_client import FakeKfpServer

    fake = FakeKfpServer()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def test_submit_to_a_cluster_uploads_the_version_once_and_waits(kfp_server):
    from typer.testing import CliRunner

    from charops.cli.main import app
    from charops.pipeline.version import read_version

    full = ROOT / "pipelines" / "full.yaml"
    runner = CliRunner()
    args = ["submit", str(full), "--host", kfp_server.url, "--param", "accelerator_limit=8",
            "--param", 'sft_overrides=["max_steps=5"]', "--run-name", "try-1", "--wait",
            "--poll", "0.01"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    version = read_version(full)
    assert f"pipeline charops-full version {version} (uploaded pipeline and version)" in res.stdout
    (run,) = kfp_server.posted("/runs")
    (run_id,) = kfp_server.runs
    assert f"run try-1 ({run_id}): {kfp_server.url}/#/runs/details/{run_id}" in res.stdout
    sent = run["body"]["runtime_config"]["parameters"]
    assert sent == {"accelerator_limit": 8, "sft_overrides": ["max_steps=5"],
                    "pipeline_version": version}
    (upload,) = kfp_server.posted("/pipelines/upload_version")
    assert upload["files"]["uploadfile"].decode() == full.read_text()
    assert [line.strip() for line in res.stderr.splitlines()] == ["PENDING", "RUNNING", "SUCCEEDED"]

    # Same file again: nothing uploaded; a failed run makes a failed command.
    res = runner.invoke(app, ["submit", str(full), "--host", kfp_server.url, "--run-name",
                              "will fail", "--wait", "--poll", "0.01", "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["uploaded"] == [] and out["final"]["state"] == "FAILED"
    assert len(kfp_server.posted("/pipelines/upload_version")) == 1

    res = runner.invoke(app, ["submit", str(full), "--host", kfp_server.url, "--run-name", "hush",
                              "--wait", "--poll", "0.01", "-q"])
    assert res.exit_code == 0 and res.output == ""  # -q: no version/run lines, no states

    res = runner.invoke(app, ["submit", str(full), "--host", kfp_server.url, "--param", "nope=1"])
    assert res.exit_code == 2 and "has no parameter 'nope'" in res.stderr
    assert len(kfp_server.posted("/runs")) == 3
