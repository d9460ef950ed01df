"""Cluster serving features of issue 16 §6, rendered and validated against the upstream KServe
CRD in ../shared/crds: vLLM prefix caching on the InferenceService, and LoRA versions served as
adapters on one base model (``--enable-lora``).

    .venv/bin/python -m pytest tests/unit/test_deploy_lora.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charops.config import load_config
from charops.deploy.inference import DeployConfig, adapter_name, render, render_lora
from charops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT.parent / "shared" / "crds"
BASE = "s3://mlpipeline/charops/base/smollm2-135m"
V3 = {"name": "charops-chat", "version": 3, "model_uri": "s3://mlpipeline/charops/models/charops-chat/3/model"}
V4 = {"name": "charops-chat", "version": 4, "model_uri": "s3://mlpipeline/charops/models/charops-chat/4/model/"}
MARA = {"name": "mara-chat", "version": 1, "model_uri": "s3://mlpipeline/charops/models/mara-chat/1/model"}


def cfg(preset: str = "gpu", *overrides: str) -> DeployConfig:
    return load_config(DeployConfig, preset, ["s3_endpoint=minio-service.kubeflow:9000", *overrides])


def crd_validate(doc: dict) -> None:
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} absent: CRD validation skipped")
    from k8s_standin import crd_schemas, schema_errors, unknown_fields

    schema = crd_schemas(CRDS)[(doc["apiVersion"], doc["kind"])]
    assert schema_errors(doc, schema) == []
    assert unknown_fields(doc, schema) == []


def test_vllm_service_enables_prefix_caching():
    _, isvc = render(V3, cfg(), s3_endpoint="x:1", s3_secure=False, characters=["林小满"])
    crd_validate(isvc)
    assert "--enable-prefix-caching" in isvc["spec"]["predictor"]["model"]["args"]
    _, off = render(V3, cfg("gpu", "prefix_caching=false"), s3_endpoint="x:1", s3_secure=False, characters=[])
    assert "--enable-prefix-caching" not in off["spec"]["predictor"]["model"]["args"]
    # The transformers backend (CPU preset) has no such flag: it is not passed to it.
    _, cpu = render(V3, cfg("cpu"), s3_endpoint="x:1", s3_secure=False, characters=[])
    assert "--enable-prefix-caching" not in cpu["spec"]["predictor"]["model"]["args"]


def test_lora_versions_are_adapters_on_one_base():
    sa, isvc = render_lora(BASE, [(V3, ["林小满", "Tom"]), (V4, ["林小满"]), (MARA, ["Mara"])], cfg(),
                           service="smollm2-lora", s3_endpoint="ignored:1", s3_secure=False)
    crd_validate(isvc)
    pred = isvc["spec"]["predictor"]
    # One service for the base; the base and each adapter fetched to their own mount.
    assert isvc["metadata"]["name"] == "smollm2-lora"
    assert pred["storageUris"] == [
        {"uri": BASE, "mountPath": "/mnt/models"},
        {"uri": V3["model_uri"] + "/adapter", "mountPath": "/mnt/adapters/charops-chat-v3"},
        {"uri": "s3://mlpipeline/charops/models/charops-chat/4/model/adapter", "mountPath": "/mnt/adapters/charops-chat-v4"},
        {"uri": MARA["model_uri"] + "/adapter", "mountPath": "/mnt/adapters/mara-chat-v1"}]
    model = pred["model"]
    assert "storageUri" not in model  # one or the other: KServe refuses both
    args = model["args"]
    assert args[0] == "--model_dir=/mnt/models" and "--enable-lora" in args and "--enable-prefix-caching" in args
    assert "--max-loras=3" in args and "--max-lora-rank=64" in args
    at = args.index("--lora-modules")
    assert args[at + 1:] == ["charops-chat-v3=/mnt/adapters/charops-chat-v3",
                             "charops-chat-v4=/mnt/adapters/charops-chat-v4", "mara-chat-v1=/mnt/adapters/mara-chat-v1"]
    served = json.loads(isvc["metadata"]["annotations"]["charops.io/adapters"])
    assert served["charops-chat-v3"] == {"model": "charops-chat", "version": 3, "characters": ["Tom", "林小满"]}
    assert served["mara-chat-v1"]["characters"] == ["Mara"]
    assert isvc["metadata"]["annotations"]["charops.io/base-model"] == BASE
    assert sa["secrets"] == [{"name": "charops-store"}] and adapter_name(V4) == "charops-chat-v4"


def test_lora_rendering_refuses_what_cannot_work():
    with pytest.raises(ConfigError, match="vllm backend"):
        render_lora(BASE, [(V3, [])], cfg("cpu"), service="s", s3_endpoint="x:1", s3_secure=False)
    with pytest.raises(ConfigError, match="no adapter"):
        render_lora(BASE, [], cfg(), service="s", s3_endpoint="x:1", s3_secure=False)
    with pytest.raises(ConfigError, match="listed twice"):
        render_lora(BASE, [(V3, []), (dict(V3), [])], cfg(), service="s", s3_endpoint="x:1", s3_secure=False)
    with pytest.raises(ConfigError, match="not in an S3 store"):
        render_lora("/local/base", [(V3, [])], cfg(), service="s", s3_endpoint="x:1", s3_secure=False)
    with pytest.raises(ConfigError, match="loopback"):
        render_lora(BASE, [(V3, [])], cfg("gpu", "s3_endpoint=127.0.0.1:9000"), service="s",
                    s3_endpoint="x:1", s3_secure=False)


# --- charops deploy with lora_versions: the registry's versions, their adapters in the store ----

@pytest.fixture
def store(s3_registry_store):
    return s3_registry_store


def _register(store, tmp_path: Path, tag: str, character: str, adapter: bool) -> dict:
    from charops import registry

    d = tmp_path / f"model-{tag}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2", "tag": tag}))
    (d / "characters.jsonl").write_text(json.dumps({"type": "profile", "name": character}) + "\n")
    if adapter:  # what training keeps next to the merged weights when lora.enabled
        (d / "adapter").mkdir()
        (d / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
        (d / "adapter" / "adapter_model.safetensors").write_bytes(b"weights " + tag.encode())
    return registry.register(store, d, "charops-chat", {"loss": 1.0}, {"base_model": "charops:smollm2-135m"})


def test_deploy_dry_run_serves_lora_versions_on_one_base(store, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from charops.cli.main import app
    from charops.deploy import cluster

    v1 = _register(store, tmp_path, "a", "林小满", adapter=True)
    v2 = _register(store, tmp_path, "b", "Mara", adapter=True)
    _register(store, tmp_path, "c", "Tom", adapter=False)
    base = "s3://models/base/smollm2-135m"
    monkeypatch.setenv("CHAROPS_STORE", store.url)
    result = CliRunner().invoke(app, ["deploy", "charops-chat", "--dry-run", "lora_versions=[1,2]",
                                      f"lora_base_uri={base}", "s3_endpoint=minio-service.kubeflow:9000"])
    assert result.exit_code == 0, result.output
    import yaml

    sa, isvc = list(yaml.safe_load_all(result.output))
    crd_validate(isvc)
    assert isvc["metadata"]["name"] == "charops-chat-lora"
    uris = [u["uri"] for u in isvc["spec"]["predictor"]["storageUris"]]
    assert uris == [base, f"{v1['model_uri']}/adapter", f"{v2['model_uri']}/adapter"]
    served = json.loads(isvc["metadata"]["annotations"]["charops.io/adapters"])
    assert served == {"charops-chat-v1": {"model": "charops-chat", "version": 1, "characters": ["林小满"]},
                      "charops-chat-v2": {"model": "charops-chat", "version": 2, "characters": ["Mara"]}}
    # A version trained without LoRA has no adapter to serve: one line saying so.
    with pytest.raises(cluster.DeployError, match="v3 has no LoRA adapter"):
        cluster.plan(store, "charops-chat", cfg("gpu", "lora_versions=[1,3]", f"lora_base_uri={base}"))
    with pytest.raises(ConfigError, match="lora_base_uri"):
        cfg("gpu", "lora_versions=[1]").validate()
