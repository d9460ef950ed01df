"""Each KFP component alone under kfp.local, on the micro model, with real kfp.dsl artifacts.

    .venv/bin/python -m pytest tests/unit/test_component_steps.py -x -q

A component with input artifacts is called from a one-step pipeline whose inputs are
``dsl.importer`` artifacts of local folders (kfp.local refuses artifact constants passed to a
component directly) and which returns the step's outputs, so each test reads the very
``dsl.Model`` / ``dsl.Metrics`` / ``dsl.Markdown`` objects kfp.local made. Every step runs as a
subprocess of this environment (``SubprocessRunner(use_venv=False)``), a few seconds each, so
they are marked slow. tests/unit/test_components.py runs them chained in the full pipeline;
the evaluate component's own test is with the evaluation stage's tests.
"""

# No `from __future__ import annotations`: KFP reads the pipelines' return annotations as types.
import json
from pathlib import Path
from typing import NamedTuple

import pytest
from kfp import dsl, local
from kfp.dsl import Artifact, Dataset, Markdown, Metrics, Model

from charops.io import sha256_tree, write_json, write_text
from charops.train.stages import STAGES

pytestmark = pytest.mark.slow
FAST = ["max_steps=1", "per_device_train_batch_size=2", "save_steps=100"]


@pytest.fixture(autouse=True)
def kfp_local(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=True)


def _imported(path: Path, cls: type, **metadata):
    return dsl.importer(artifact_uri=str(path), artifact_class=cls, reimport=False, metadata=metadata).output


@pytest.fixture(scope="module")
def eval_dataset_dir(tmp_path_factory, micro_model_dir) -> Path:
    """train_records() prepared with Tom held out: an sft/ and dpo/ validation split to evaluate on."""
    from conftest import train_records

    from charops.config import load_config
    from charops.data.prepare import PrepareConfig, run
    from charops.io import write_jsonl

    work = tmp_path_factory.mktemp("eval_data")
    write_jsonl(work / "records.jsonl", train_records())
    run(load_config(PrepareConfig, None, [f"inputs={work / 'records.jsonl'}", f"model={micro_model_dir}",
                                          f"output_dir={work / 'data'}", "split_by=character",
                                          'holdout_characters=["Tom"]', "block_size=32", "max_seq_len=512",
                                          "progress=false"]))
    return work / "data"


def test_base_model_builds_the_tiny_model_or_copies_a_directory(micro_model_dir):
    from charops.components.base_model.component import base_model

    built = base_model(base_model="charops:tiny", config="micro", overrides=["seed=5"]).outputs["model"]
    assert isinstance(built, Model)
    assert json.loads((Path(built.path) / "config.json").read_text())["hidden_size"] == 32  # micro preset
    assert built.metadata["sha256"] == sha256_tree(built.path)
    assert (built.metadata["base_model"], built.metadata["config"], built.metadata["overrides"]) == \
        ("charops:tiny", "micro", ["seed=5"])

    copied = base_model(base_model=str(micro_model_dir), config="", overrides=[]).outputs["model"]
    assert Path(copied.path) != micro_model_dir and sha256_tree(copied.path) == sha256_tree(micro_model_dir)
    assert copied.metadata["base_model"] == str(micro_model_dir)


def test_data_prep_prepares_a_raw_file_with_the_models_tokenizer(tmp_path, micro_model_dir):
    from conftest import train_records

    from charops.components.data_prep.component import data_prep
    from charops.io import write_jsonl
    from charops.model import tokenizer_sha256

    raw = tmp_path / "records.jsonl"
    write_jsonl(raw, train_records())
    class Out(NamedTuple):
        dataset: Dataset
        metrics: Metrics
        summary: Markdown

    @dsl.pipeline(name="one-data-prep")
    def one() -> Out:
        t = data_prep(model=_imported(micro_model_dir, Model), data=str(raw), config="default",
                      overrides=["progress=false", "split_by=character", 'holdout_characters=["Tom"]',
                                 "max_seq_len=512", "block_size=32"])
        return Out(t.outputs["dataset"], t.outputs["metrics"], t.outputs["summary"])

    out = one().outputs
    manifest = json.loads((Path(out["dataset"].path) / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == tokenizer_sha256(micro_model_dir) == out["dataset"].metadata["tokenizer_sha256"]
    assert manifest["config"]["inputs"] == [str(raw)] and manifest["config"]["holdout_characters"] == ["Tom"]
    assert out["dataset"].metadata["content_sha256"] == manifest["content_sha256"]
    assert out["dataset"].metadata["data"] == str(raw)
    assert out["metrics"].metadata["counts.accepted"] == manifest["counts"]["accepted"] == len(train_records())
    assert out["metrics"].metadata["counts.sft.train"] == manifest["counts"]["sft"]["train"] > 0
    assert "# Prepared dataset" in Path(out["summary"].path).read_text()


# Every stage that trains on what data_prep writes; KTO trains on `charops feedback export`
# output instead (a kto/ split this dataset does not have).
@pytest.mark.parametrize("stage", [s for s in STAGES if s != "kto"])
def test_training_component_trains_one_step_and_reports_it(stage, micro_model_dir, train_dataset_dir):
    import importlib

    component = getattr(importlib.import_module(f"charops.components.{stage}.component"), stage)
    class Out(NamedTuple):
        trained_model: Model
        metrics: Metrics
        report: Markdown

    @dsl.pipeline(name=f"one-{stage}")
    def one() -> Out:
        t = component(model=_imported(micro_model_dir, Model, base_model="charops:tiny"),
                      dataset=_imported(train_dataset_dir, Dataset), config="tiny-cpu", overrides=FAST)
        return Out(t.outputs["trained_model"], t.outputs["metrics"], t.outputs["report"])

    out = one().outputs
    model = Path(out["trained_model"].path)
    summary = json.loads((model / "training_summary.json").read_text())
    assert (summary["stage"], summary["steps"], summary["config"]["max_steps"]) == (stage, 1, 1)
    assert summary["config"]["model"] == str(micro_model_dir)  # the importer's artifact is the folder itself
    assert summary["dataset"]["path"] == str(train_dataset_dir)
    assert (model / "model.safetensors").is_file() and not (model / "checkpoints").exists()
    assert (model / "characters.jsonl").read_bytes() == (train_dataset_dir / "characters.jsonl").read_bytes()
    meta = out["trained_model"].metadata
    assert (meta["stage"], meta["config"], meta["overrides"], meta["base_model"]) == (stage, "tiny-cpu", FAST, "charops:tiny")
    assert meta["sha256"] == sha256_tree(model) != sha256_tree(micro_model_dir)
    numbers = out["metrics"].metadata
    assert numbers["steps"] == 1 and numbers["final_loss"] == pytest.approx(summary["final_loss"])
    assert not any(k.startswith(("config.", "versions.", "loss_curve")) for k in numbers)  # inputs are not metrics
    report = Path(out["report"].path).read_text()
    assert "| steps | 1 |" in report and '"max_steps": 1' in report
    if stage == "dpo":  # the model itself is the reference
        assert summary["config"]["ref_model"] == summary["config"]["model"]
        assert "rewards.final.margins" in numbers


def test_register_component_publishes_the_next_version(tmp_path, micro_model_dir, micro_ref_model_dir,
                                                       eval_dataset_dir):
    from charops.components.register.component import register
    from charops.registry import get_entry
    from charops.storage import LocalStore

    evaluation = tmp_path / "eval"
    write_json(evaluation / "metrics.json", {"model": {"loss": 2.5, "examples": 3}, "baseline": {"loss": 3.0},
                                             "loss_delta": -0.5, "config": {"batch_size": 8}})
    write_text(evaluation / "report.md", "# report\n")
    store = tmp_path / "store"

    class Out(NamedTuple):
        entry: Artifact
        report: Markdown
        version: int
        model_uri: str

    @dsl.pipeline(name="one-register")
    def one(model_dir: str) -> Out:
        model = dsl.importer(artifact_uri=model_dir, artifact_class=Model, reimport=False).output
        t = register(model=model, dataset=_imported(eval_dataset_dir, Dataset),
                     evaluation=_imported(evaluation, Artifact), name="micro-chat", store=str(store),
                     base_model="charops:tiny", pipeline_version="v-test", run_id="r1", run_name="run one")
        return Out(t.outputs["entry"], t.outputs["report"], t.outputs["version"], t.outputs["model_uri"])

    first = one(model_dir=str(micro_model_dir)).outputs
    entry = get_entry(LocalStore(store), "micro-chat")
    assert first["version"] == entry["version"] == 1 and first["model_uri"] == entry["model_uri"]
    assert json.loads(Path(first["entry"].path).read_text()) == entry
    assert entry["metrics"] == {"model.loss": 2.5, "model.examples": 3, "baseline.loss": 3.0, "loss_delta": -0.5}
    manifest = json.loads((eval_dataset_dir / "manifest.json").read_text())
    assert entry["lineage"] == {"dataset_sha256": manifest["content_sha256"], "base_model": "charops:tiny",
                                "pipeline_version": "v-test", "run_id": "r1", "run_name": "run one"}
    assert entry["model_sha256"] == sha256_tree(micro_model_dir) == first["entry"].metadata["sha256"]
    assert "# micro-chat v1" in Path(first["report"].path).read_text()
    # The same weights again are the same version; other weights are the next one.
    assert one(model_dir=str(micro_model_dir)).outputs["version"] == 1
    second = one(model_dir=str(micro_ref_model_dir)).outputs
    assert second["version"] == 2 == get_entry(LocalStore(store), "micro-chat")["version"]
