"""Kustomize overlays build, and every object they produce validates.

    .venv/bin/python -m pytest tests/unit/test_manifests.py -x -q

Built-in kinds are checked by kubernetes-validate (strict: unknown fields fail); KServe and
Kubeflow Trainer kinds against their upstream CRD schemas in ../shared/crds/ (not copied into
the project: without them those checks skip, saying why).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

import charops

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CRDS = ROOT.parent / "shared" / "crds"
KUBECTL = Path(sys.executable).parent / "kubectl"
K8S_VERSION = "1.30.0"
OVERLAYS = ["dev", "gpu-cluster"]


def build(overlay: str) -> list[dict]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(MANIFESTS / "overlays" / overlay)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of the served version, from ../shared/crds."""
    schemas = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served"):
                schemas[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    return schemas


def is_custom(doc: dict) -> bool:
    return doc["apiVersion"].split("/")[0].endswith(("kserve.io", "kubeflow.org"))


def validate(doc: dict) -> None:
    if is_custom(doc):
        if not CRDS.is_dir():
            pytest.skip(f"{CRDS} absent (a user's clone): custom resources not validated")
        schema = crd_schemas().get((doc["apiVersion"], doc["kind"]))
        assert schema is not None, f"no CRD for {doc['apiVersion']} {doc['kind']} in {CRDS}"
        jsonschema.Draft7Validator(schema).validate(doc)
        _check_no_unknown_fields(doc, schema, doc["kind"])
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _check_no_unknown_fields(value, schema: dict, where: str) -> None:
    """Structural CRD schemas prune unknown fields silently; a typo would vanish, so fail on it."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"):
        return
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if where.count(".") == 0 and key in ("apiVersion", "kind", "metadata"):
                continue
            assert key in schema["properties"], f"{where}: unknown field '{key}'"
            _check_no_unknown_fields(item, schema["properties"][key], f"{where}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check_no_unknown_fields(item, schema["items"], f"{where}[{i}]")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_validates(overlay):
    docs = build(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterTrainingRuntime", "ConfigMap", "InferenceService", "ServiceAccount", "TrainJob"]
    for doc in docs:
        assert "namespace" not in doc["metadata"], "base is namespace-agnostic"
        validate(doc)


def _by_kind(docs):
    return {d["kind"]: d for d in docs}


def test_dev_has_no_gpus_and_gpu_cluster_does():
    dev, gpu = _by_kind(build("dev")), _by_kind(build("gpu-cluster"))
    assert "nvidia.com/gpu" not in yaml.safe_dump(dev)
    isvc = gpu["InferenceService"]["spec"]["predictor"]
    assert isvc["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert isvc["model"]["modelFormat"]["name"] == "huggingface" and "--backend=vllm" in isvc["model"]["args"]
    assert isvc["model"]["storageUri"].startswith("s3://")
    assert isvc["serviceAccountName"] == "charops"
    assert isvc["nodeSelector"] and isvc["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert gpu["TrainJob"]["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    pod = gpu["ClusterTrainingRuntime"]["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["tolerations"] and pod["nodeSelector"]


def test_images_are_the_versioned_charops_image():
    for overlay in OVERLAYS:
        docs = _by_kind(build(overlay))
        image = f"ghcr.io/charops/charops:{charops.__version__}"
        assert docs["TrainJob"]["spec"]["trainer"]["image"] == image
        rt = docs["ClusterTrainingRuntime"]["spec"]["template"]["spec"]["replicatedJobs"][0]
        assert rt["template"]["spec"]["template"]["spec"]["containers"][0]["image"] == image


def test_service_account_carries_the_store_secret_and_examples_validate():
    sa = _by_kind(build("dev"))["ServiceAccount"]
    assert sa["secrets"] == [{"name": "charops-store"}]
    examples = [d for d in yaml.safe_load_all((MANIFESTS / "examples" / "secrets.example.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in examples} == {"charops-store", "charops-judge"}
    for doc in examples:
        validate(doc)


def test_validation_catches_a_typo():
    """The checks above can fail: a misspelt field is rejected for both kinds of object."""
    docs = _by_kind(build("dev"))
    isvc = docs["InferenceService"]
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    if CRDS.is_dir():
        with pytest.raises(AssertionError, match="unknown field 'storageURI'"):
            validate(isvc)
    cm = docs["ConfigMap"]
    cm["datta"] = cm.pop("data")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(cm)
