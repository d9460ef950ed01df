"""Compiled pipelines: committed YAML is fresh, versions follow the spec, cluster settings land.

    .venv/bin/python -m pytest tests/unit/test_compile.py -x -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from charops.errors import CharopsError
from charops.pipeline.compile import compile_pipeline, compile_text, pipeline_names, stale
from charops.pipeline.tasks import load_cluster_config
from charops.pipeline.version import compute_version, read_version

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ["eval_only", "feedback", "full", "sft_dpo"]
# Training steps; evaluate-2 is the evaluation without a reward model (the judge's Else branch).
TRAINING = {"full": ["pretrain", "sft", "dpo", "reward", "evaluate", "evaluate-2"],
            "sft_dpo": ["sft", "dpo", "reward", "evaluate", "evaluate-2"],
            "eval_only": ["reward", "evaluate", "evaluate-2"]}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    # The committed files are compiled with the default image and from the repository root.
    monkeypatch.delenv("CHAROPS_IMAGE", raising=False)
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    return {name: compile_text(name) for name in PIPELINES}


def _docs(text: str) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(text)
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _param(ref: dict, name: str) -> bool:
    """Whether ``ref`` reads pipeline parameter ``name`` (inside a condition KFP passes it on
    as ``pipelinechannel--<name>``)."""
    return ref in ({"componentInputParameter": name},
                   {"componentInputParameter": f"pipelinechannel--{name}"})


def _tasks(spec: dict) -> dict:
    """Every task of the pipeline: the root DAG's and those inside conditions (sub-DAGs)."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_every_pipeline_is_found():
    assert pipeline_names() == PIPELINES


@pytest.mark.parametrize("name", PIPELINES)
def test_committed_yaml_is_not_stale(name, fresh):
    committed = ROOT / "pipelines" / f"{name}.yaml"
    assert committed.is_file(), f"{committed} missing: run `charops compile --all`"
    assert committed.read_text(encoding="utf-8") == fresh[name], \
        f"{committed} is stale: run `charops compile {name}` and commit the result"
    assert read_version(committed) == compute_version(fresh[name])


def test_compiling_twice_gives_the_same_bytes(fresh):
    assert compile_text("full") == fresh["full"]


def test_version_changes_with_the_spec(fresh):
    other = compile_text("full", load_cluster_config("cluster", ["retries=5"]))
    base_version, other_version = compute_version(fresh["full"]), compute_version(other)
    assert base_version != other_version
    assert base_version.startswith("0.1.0-") and len(base_version.split("-")[1]) == 8
    assert f"# charops-pipeline-version: {other_version}" in other


@pytest.mark.parametrize("name", PIPELINES)
def test_yaml_loads_back_as_a_pipeline(name, tmp_path, fresh):
    from kfp.components import load_component_from_file

    path = tmp_path / f"{name}.yaml"
    path.write_text(fresh[name], encoding="utf-8")
    component = load_component_from_file(str(path))
    assert component.name == f"charops-{name.replace('_', '-')}"
    params = component.component_spec.inputs
    for p in ("accelerator_type", "accelerator_limit", "node_selector", "tolerations",
              "s3_secret", "judge_secret", "model_cache_pvc", "eval_config", "eval_overrides"):
        assert p in params, f"{name} lacks parameter {p}"


def test_cluster_settings_are_parameters_or_config(fresh):
    cluster = load_cluster_config()
    spec, executors = _docs(fresh["full"])
    tasks = _tasks(spec)
    for task in TRAINING["full"]:
        t = tasks[task]
        assert t["cachingOptions"] == {}, f"{task}: caching must be off"  # enableCache false
        assert t["retryPolicy"]["maxRetryCount"] == cluster.retries
        ex = executors[f"exec-{task}"]
        assert ex["activeDeadlineSeconds"] == str(cluster.training_timeout_s)
        assert _param(ex["nodeSelector"]["nodeSelectorJson"], "node_selector")
        assert len(ex["tolerations"]) == 1 and _param(ex["tolerations"][0]["tolerationJson"], "tolerations")
        s3 = next(s for s in ex["secretAsEnv"] if _param(s["secretNameParameter"], "s3_secret"))
        assert {k["secretKey"]: k["envVar"] for k in s3["keyToEnv"]} == cluster.s3_secret_env
        assert _param(ex["pvcMount"][0]["pvcNameParameter"], "model_cache_pvc")
        resources = spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]["resources"]
        assert "accelerator_limit" in resources["accelerator"]["resourceCount"]
        assert "accelerator_type" in resources["accelerator"]["resourceType"]
    # The judge key only goes to evaluation.
    judge = [t for t, ex in executors.items()
             if any(_param(s["secretNameParameter"], "judge_secret") for s in ex.get("secretAsEnv", []))]
    assert judge == ["exec-evaluate", "exec-evaluate-2"]
    keys = next(s for s in executors["exec-evaluate"]["secretAsEnv"]
                if _param(s["secretNameParameter"], "judge_secret"))
    assert keys["optional"] is True
    assert {k["secretKey"]: k["envVar"] for k in keys["keyToEnv"]} == cluster.judge_secret_env
    # Light steps: cached, no accelerator, shorter deadline.
    for task in ("base-model", "data-prep", "register"):
        assert tasks[task]["cachingOptions"] == {"enableCache": True}
        assert executors[f"exec-{task}"]["activeDeadlineSeconds"] == str(cluster.step_timeout_s)
        assert "accelerator" not in spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"].get("resources", {})
    # Cluster config defaults become parameter defaults.
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["s3_secret"]["defaultValue"] == cluster.s3_secret
    assert inputs["tolerations"]["defaultValue"] == cluster.tolerations
    assert inputs["store"]["defaultValue"] == cluster.store


def test_a_cluster_config_changes_compile_time_settings():
    cluster = load_cluster_config("cluster", ["training_timeout_s=60", "model_cache_enabled=false",
                                              "s3_secret=my-minio", "retries=0"])
    spec, executors = _docs(compile_text("sft_dpo", cluster))
    assert executors["exec-sft"]["activeDeadlineSeconds"] == "60"
    assert all("pvcMount" not in ex for ex in executors.values())
    assert spec["root"]["inputDefinitions"]["parameters"]["s3_secret"]["defaultValue"] == "my-minio"
    assert "retryPolicy" not in spec["root"]["dag"]["tasks"]["sft"]


def test_unknown_pipeline_and_bad_cluster_config_are_one_line_errors(tmp_path):
    with pytest.raises(CharopsError, match="no pipeline named 'nope'.*full"):
        compile_text("nope")
    with pytest.raises(CharopsError, match="unknown key 'retry'; did you mean 'retries'"):
        load_cluster_config("cluster", ["retry=1"])
    with pytest.raises(CharopsError, match="retries must be >= 0"):
        load_cluster_config("cluster", ["retries=-1"])


def test_stale_detects_an_edited_file(tmp_path, fresh):
    path = compile_pipeline("eval_only", tmp_path / "eval_only.yaml")
    assert not stale("eval_only", path)
    path.write_text(path.read_text().replace("reward_model", "other"), encoding="utf-8")
    assert stale("eval_only", path)
    assert stale("eval_only", tmp_path / "missing.yaml")


def test_cli_compile_and_check(tmp_path):
    from charops.cli.main import app

    runner = CliRunner()
    out = tmp_path / "full.yaml"
    res = runner.invoke(app, ["compile", "full", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert read_version(out) in res.output
    assert runner.invoke(app, ["compile", "full", "--output", str(out), "--check"]).exit_code == 0
    out.write_text(out.read_text().replace("tiny-cpu", "gpu"), encoding="utf-8")
    res = runner.invoke(app, ["compile", "full", "--output", str(out), "--check"])
    assert res.exit_code == 1 and f"stale: {out}" in res.output
    res = runner.invoke(app, ["compile", "nope"])
    assert res.exit_code == 2 and "error: no pipeline named 'nope'" in res.output


@pytest.mark.parametrize("name", PIPELINES)
def test_judge_branches(name, fresh):
    """judge=reward_model: reward model then evaluate; otherwise evaluate alone; register (in
    the training pipelines) after the evaluation in each branch. The branches' sub-DAGs receive
    the accelerator parameters their training steps use (charops.pipeline.tasks._record_inputs)."""
    spec, _ = _docs(fresh[name])
    conditions = {c: v for c, v in spec["components"].items() if "dag" in v and "condition" in c}
    branches = {frozenset(v["dag"]["tasks"]) for v in conditions.values()}
    registers = (["register"], ["register-2"]) if name != "eval_only" else ([], [])
    # In the training pipelines each branch also holds the gated promotion after its register
    # step, a condition of its own (tests/unit/test_promote_component.py).
    plain = {frozenset(t for t in b if not t.startswith("condition-")) for b in branches}
    assert frozenset({"reward", "evaluate", *registers[0]}) in plain
    assert frozenset({"evaluate-2", *registers[1]}) in plain
    for component in conditions.values():
        tasks = component["dag"]["tasks"]
        if "reward" in tasks or "evaluate-2" in tasks:
            params = component["inputDefinitions"]["parameters"]
            assert {"pipelinechannel--accelerator_type", "pipelinechannel--accelerator_limit"} <= set(params)
    with_reward = next(c for c, v in conditions.items() if "reward" in v["dag"]["tasks"])
    gate = next(t for t in _tasks(spec).values() if t["componentRef"]["name"] == with_reward)
    assert gate["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--judge'] == 'reward_model'"
    assert spec["root"]["inputDefinitions"]["parameters"]["judge"]["defaultValue"] == "reward_model"
    tasks = _tasks(spec)
    for reg, ev in (("register", "evaluate"), ("register-2", "evaluate-2")) if registers[0] else ():
        evaluation = tasks[reg]["inputs"]["artifacts"]["evaluation"]["taskOutputArtifact"]
        assert evaluation == {"outputArtifactKey": "results", "producerTask": ev}


def test_training_pipelines_take_the_shared_parameters(fresh):
    """full and sft_dpo take recipe_parameters for their stages: names, types and defaults."""
    from charops.pipeline.params import recipe_parameters

    cluster = load_cluster_config()
    kinds = {str: "STRING", int: "NUMBER_INTEGER", list: "LIST", dict: "STRUCT"}
    for name, stages in (("full", ("pretrain", "sft", "dpo")), ("sft_dpo", ("sft", "dpo"))):
        inputs = _root_inputs(fresh[name])
        expected = recipe_parameters(cluster, stages)
        assert sorted(inputs) == sorted(p.name for p in expected)
        for p in expected:
            assert inputs[p.name]["parameterType"] == kinds[p.annotation], p.name
            assert inputs[p.name]["defaultValue"] == p.default, p.name
    full_only = set(_root_inputs(fresh["full"])) - set(_root_inputs(fresh["sft_dpo"]))
    assert full_only == {"pretrain_config", "pretrain_overrides"}


def _root_inputs(text: str) -> dict:
    spec = next(yaml.safe_load_all(text))  # the pipeline spec; the platform spec follows
    return spec["root"]["inputDefinitions"]["parameters"]
