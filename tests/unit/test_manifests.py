"""Kustomize overlays build, every object they produce validates, and the Role is least privilege.

    .venv/bin/python -m pytest tests/unit/test_manifests.py -x -q

Built-in kinds are checked by kubernetes-validate (strict: unknown fields fail); KServe and
Kubeflow Trainer kinds against their upstream CRD schemas in ../shared/crds/ (not copied into
the project: without them those checks skip, saying why), unknown fields rejected. The RBAC
test reads every API call from charops' client code (tests/k8s_rbac.py) and checks the Role
grants exactly those.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from k8s_rbac import code_permissions, role_permissions
from k8s_standin import crd_schemas, schema_errors, unknown_fields

import charops
from charops.pipeline.tasks import load_cluster_config
from charops.storage import KFP_ENDPOINT, KFP_SECRET_NAME

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CRDS = ROOT.parent / "shared" / "crds"
KUBECTL = Path(sys.executable).parent / "kubectl"
K8S_VERSION = "1.30.0"
OVERLAYS = ["dev", "gpu-cluster", "kubeflow"]
NAMESPACED_KINDS = ["ConfigMap", "PersistentVolumeClaim", "Role", "RoleBinding", "ServiceAccount"]


def build(path: str) -> list[dict]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(MANIFESTS / path)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


def is_custom(doc: dict) -> bool:
    return doc["apiVersion"].split("/")[0].endswith(("kserve.io", "kubeflow.org"))


def validate(doc: dict) -> None:
    if is_custom(doc):
        if not CRDS.is_dir():
            pytest.skip(f"{CRDS} absent (a user's clone): custom resources not validated")
        schema = crd_schemas(CRDS).get((doc["apiVersion"], doc["kind"]))
        assert schema is not None, f"no CRD for {doc['apiVersion']} {doc['kind']} in {CRDS}"
        assert schema_errors(doc, schema) == [], doc["metadata"]["name"]
        unknown = unknown_fields(doc, schema)
        assert not unknown, f"{doc['kind']}: unknown field '{unknown[0]}'"
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_validates(overlay):
    docs = build(f"overlays/{overlay}")
    assert sorted(d["kind"] for d in docs) == NAMESPACED_KINDS  # no Secret, no parameters object
    namespace = docs[0]["metadata"]["namespace"]
    for doc in docs:
        assert doc["metadata"]["namespace"] == namespace
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "charops"
        validate(doc)
    binding = by_kind(docs)["RoleBinding"]
    assert {"kind": "ServiceAccount", "name": "charops", "namespace": namespace} in binding["subjects"]


@pytest.mark.parametrize("variant", ["base", "gpu"])
def test_training_runtime_builds_and_validates(variant):
    [runtime] = build(f"runtime/{variant}")
    assert runtime["kind"] == "ClusterTrainingRuntime" and runtime["metadata"]["name"] == "charops-deepspeed"
    assert "namespace" not in runtime["metadata"]  # cluster-scoped
    validate(runtime)
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"ghcr.io/charops/charops:{charops.__version__}"
    assert pod["serviceAccountName"] == "charops"
    if variant == "gpu":
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    else:
        assert "nodeSelector" not in pod and "tolerations" not in pod


def test_model_cache_pvc_takes_its_parameters_from_the_overlay():
    pvcs = {o: by_kind(build(f"overlays/{o}"))["PersistentVolumeClaim"] for o in OVERLAYS}
    cluster = load_cluster_config()
    for o, pvc in pvcs.items():
        params = yaml.safe_load((MANIFESTS / "overlays" / o / "params.yaml").read_text())["data"]
        assert pvc["metadata"]["name"] == cluster.model_cache_pvc == "charops-model-cache"
        assert pvc["spec"]["storageClassName"] == params["modelCacheStorageClass"]
        assert pvc["spec"]["resources"]["requests"]["storage"] == params["modelCacheSize"]
        assert pvc["spec"]["accessModes"] == [params["modelCacheAccessMode"]]
    assert pvcs["dev"]["spec"]["accessModes"] == ["ReadWriteOnce"]  # kind/minikube have no RWX
    assert pvcs["gpu-cluster"]["spec"]["accessModes"] == ["ReadWriteMany"]  # shared by training nodes
    assert len({p["spec"]["storageClassName"] for p in pvcs.values()}) > 1


def test_kubeflow_overlay_uses_the_kfp_store_and_its_secret():
    docs = by_kind(build("overlays/kubeflow"))
    assert docs["ConfigMap"]["data"]["CHAROPS_S3_ENDPOINT"] == f"http://{KFP_ENDPOINT}"
    assert docs["ConfigMap"]["data"]["CHAROPS_STORE"].startswith("s3://mlpipeline/")
    assert {"name": KFP_SECRET_NAME} in docs["ServiceAccount"]["secrets"]
    # Pipeline steps of a Kubeflow profile run as default-editor: they submit the TrainJobs.
    assert {s["name"] for s in docs["RoleBinding"]["subjects"]} == {"charops", "default-editor"}
    assert load_cluster_config().s3_secret == KFP_SECRET_NAME  # what the pipeline steps mount


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_role_grants_exactly_what_the_client_code_calls(overlay):
    needed = code_permissions()
    # The extraction itself works: the calls deploy and the TrainJob launcher must make.
    assert ("serving.kserve.io", "inferenceservices", "create") in needed
    assert ("", "pods/log", "get") in needed
    role = by_kind(build(f"overlays/{overlay}"))["Role"]
    granted = role_permissions(role)
    assert granted - needed == set(), "the Role grants more than charops calls"
    assert needed - granted == set(), "charops calls what the Role does not grant"
    assert all("*" not in v for v in granted for v in v)  # no wildcards
    assert not any(r.startswith("secrets") for _, r, _ in granted)


def test_secrets_are_templates_only():
    examples = [d for d in yaml.safe_load_all((MANIFESTS / "examples" / "secrets.example.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in examples} == {"charops-store", "charops-judge"}
    for doc in examples:
        validate(doc)
        for key, value in doc["stringData"].items():
            assert value.startswith("your-") or "example.com" in value, f"{key}: a real-looking value"
    store = next(d for d in examples if d["metadata"]["name"] == "charops-store")
    assert set(store["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # what KServe reads
    assert set(store["metadata"]["annotations"]) >= {"serving.kserve.io/s3-endpoint", "serving.kserve.io/s3-usehttps"}
    # Nothing under manifests/ that kustomize builds is a Secret.
    for overlay in OVERLAYS:
        assert "Secret" not in {d["kind"] for d in build(f"overlays/{overlay}")}


def test_validation_catches_a_typo():
    """The checks above can fail: a misspelt field is rejected for both kinds of object."""
    if CRDS.is_dir():
        [runtime] = build("runtime/base")
        runtime["spec"]["mlPolicy"]["numNode"] = runtime["spec"]["mlPolicy"].pop("numNodes")
        with pytest.raises(AssertionError, match="unknown field 'spec.mlPolicy.numNode'"):
            validate(runtime)
    cm = by_kind(build("overlays/dev"))["ConfigMap"]
    cm["datta"] = cm.pop("data")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(cm)
