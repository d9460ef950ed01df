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
from charops.registry import history, production, register
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
        "baseline": {"model": "runs/base"},
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
