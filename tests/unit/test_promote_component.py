"""The promotion_gate and promote components under kfp.local, wired as the pipelines wire
them (``dsl.If`` on the gate's decision), against a real local registry.

    .venv/bin/python -m pytest tests/unit/test_promote_component.py -x -q
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as types.
import json
from pathlib import Path

import pytest
from kfp import dsl, local
from kfp.dsl import Artifact

from charops.components.promote.component import promote, promotion_gate
from charops.pipeline.recipe import gated_promotion
from charops.pipeline.tasks import Placement, load_cluster_config
from charops.registry import history, production, register, stage_of
from charops.storage.local import LocalStore

pytestmark = pytest.mark.slow
LINEAGE = {"dataset_sha256": "d" * 64, "base_model": "charops:tiny", "pipeline_version": "v1",
           "run_id": "r1", "run_name": "run-1"}


@pytest.fixture(autouse=True)
def kfp_local(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=True)


@dsl.pipeline(name="gate-then-promote")
def gate_then_promote(entry_path: str, store: str, to: str, overrides: list) -> str:
    entry = dsl.importer(artifact_uri=entry_path, artifact_class=Artifact, reimport=False).output
    gate = promotion_gate(entry=entry, store=store, to=to, config="default", overrides=overrides)
    with dsl.If(gate.outputs["Output"] == "promote"):
        promote(entry=entry, store=store, to=to, config="default", overrides=overrides,
                run_name="nightly-7")
    return gate.outputs["Output"]


def _entry_file(store: LocalStore, tmp_path: Path, i: int, p: float) -> str:
    model, reports = tmp_path / f"m{i}", tmp_path / f"r{i}"
    model.mkdir()
    reports.mkdir()
    (model / "config.json").write_text("{}\n")
    (model / "model.safetensors").write_bytes(f"w{i}".encode())
    dims = {"overall": {"Overall": {"mean": 3.4}, "Safety": {"mean": 4.0}}}
    (reports / "eval_summary.json").write_text(json.dumps({
        "schema": "charops.eval_summary/v1", "baseline": {"model": "runs/base"},
        "pointwise": {"candidate": dims, "baseline": dims},
        "pairwise": {"overall": {"advantage": 30.0, "sign_test_p": p, "n": 40}}}))
    entry = register(store, model, "chat", {}, LINEAGE, reports_dir=reports)
    path = tmp_path / f"entry{i}.json"
    path.write_text(json.dumps(entry))
    return str(path)


def test_refused_then_promoted(tmp_path):
    store = LocalStore(tmp_path / "store")
    refused = gate_then_promote(entry_path=_entry_file(store, tmp_path, 1, 0.2),
                                store=str(store.root), to="production", overrides=[])
    assert refused.output == "refuse"
    assert production(store, "chat") is None and history(store, "chat") == []

    passed = gate_then_promote(entry_path=_entry_file(store, tmp_path, 2, 0.001),
                               store=str(store.root), to="production", overrides=[])
    assert passed.output == "promote"
    assert production(store, "chat")["version"] == 2
    event = history(store, "chat")[-1]
    assert event["actor"] == "pipeline:nightly-7" and event["gate"]["passed"]
    assert "nightly-7" in event["reason"] and not event["force"]


CLUSTER = load_cluster_config("cluster")
WHERE = Placement("NVIDIA_TESLA_T4", 1, {}, [], "mlpipeline-minio-artifact", "judge", "cache")


@dsl.pipeline(name="promotion-in-a-branch")
def promotion_in_a_branch(entry_path: str, store: str, judge: str, promote_to: str):
    """The pipelines' shape: the register step (here an importer) and the gated promotion
    inside one branch of the judge condition, the promotion itself behind two conditions."""
    with dsl.If(judge == "reward_model", "judge: reward model"):
        entry = dsl.importer(artifact_uri=entry_path, artifact_class=Artifact, reimport=False)
        gated_promotion(CLUSTER, WHERE, entry=entry.output, store=store, promote_to=promote_to,
                        promote_config="default", promote_overrides=[])
    with dsl.Else("judge: none"):
        other = dsl.importer(artifact_uri=entry_path, artifact_class=Artifact, reimport=False)
        gated_promotion(CLUSTER, WHERE, entry=other.output, store=store, promote_to=promote_to,
                        promote_config="default", promote_overrides=[])


def test_gated_promotion_as_wired_in_the_pipelines(tmp_path):
    store = LocalStore(tmp_path / "store")
    entry = _entry_file(store, tmp_path, 1, 0.001)
    # Off by default (promote_to empty): nothing runs, nothing changes.
    promotion_in_a_branch(entry_path=entry, store=str(store.root), judge="reward_model",
                          promote_to="")
    assert history(store, "chat") == []
    promotion_in_a_branch(entry_path=entry, store=str(store.root), judge="none",
                          promote_to="staging")
    assert stage_of(store, "chat", 1) == "staging"
    promotion_in_a_branch(entry_path=entry, store=str(store.root), judge="reward_model",
                          promote_to="production")
    assert production(store, "chat")["version"] == 1
    assert [e["to"] for e in history(store, "chat")] == ["staging", "production"]


@pytest.mark.parametrize("name", ["full", "sft_dpo"])
def test_compiled_pipelines_end_with_the_conditional_promotion(name):
    """The committed YAML: promote_to is off by default; in each judge branch the gate follows
    register and the promote step sits behind the gate's decision."""
    import yaml

    spec = next(yaml.safe_load_all((Path(__file__).parents[2] / "pipelines" / f"{name}.yaml").read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["promote_to"]["defaultValue"] == "" and params["promote_config"]["defaultValue"] == "default"
    dags = {k: v["dag"]["tasks"] for k, v in spec["components"].items() if "dag" in v}
    gates = []
    for tasks in dags.values():
        for task in tasks.values():
            cond = task.get("triggerPolicy", {}).get("condition", "")
            if cond == "inputs.parameter_values['pipelinechannel--promote_to'] != ''":
                inner = dags[task["componentRef"]["name"]]
                gate = next(t for t in inner if t.startswith("promotion-gate"))
                # The register step's entry, passed into the condition.
                entry = inner[gate]["inputs"]["artifacts"]["entry"]["componentInputArtifact"]
                assert entry.startswith("pipelinechannel--register") and entry.endswith("-entry")
                passed = next(t for k, t in inner.items() if k.startswith("condition-"))
                assert passed["triggerPolicy"]["condition"] == \
                    f"inputs.parameter_values['pipelinechannel--{gate}-Output'] == 'promote'"
                assert any(t.startswith("promote") for t in dags[passed["componentRef"]["name"]])
                gates.append(gate)
    assert sorted(gates) == ["promotion-gate", "promotion-gate-2"]  # one per judge branch
