"""charops deploy / rollback on a cluster: rendering, create/patch, wait, canary, failures.

    .venv/bin/python -m pytest tests/unit/test_deploy_cluster.py -x -q

The Kubernetes API here is a STAND-IN (tests/k8s_standin.py, fixture ``kube_standin``), not a
cluster: it validates every body against the upstream KServe CRD in ../shared/crds with
unknown fields rejected, and the KServe controller is played by the small functions below,
which set ``status`` as KServe documents it. The registry is a real S3 store (weed mini).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from charops import registry
from charops.config import load_config
from charops.deploy import cluster
from charops.deploy.inference import DeployConfig, merge_diff, render
from charops.deploy.kube import INFERENCESERVICES, SERVICEACCOUNTS, KubeError, connect
from charops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT.parent / "shared" / "crds"
NS = "charops-test"
NAME = "charops-chat"
CHARACTERS = [{"type": "profile", "name": "林小满", "identity": "书店店员"},
              {"type": "profile", "name": "Captain Reed", "identity": "a sea captain"}]


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture
def store(s3_registry_store):
    return s3_registry_store


def register_version(store, tmp_path: Path, tag: str, characters=CHARACTERS) -> dict:
    """A registry entry whose model directory carries characters.jsonl (content differs per tag)."""
    d = tmp_path / f"model-{tag}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2", "tag": tag}))
    if characters is not None:
        (d / "characters.jsonl").write_text(
            "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in characters), encoding="utf-8")
    return registry.register(store, d, NAME, {"loss": 1.0}, {"base_model": "charops:tiny"})


def to_production(store, version: int) -> None:
    registry.transition(store, NAME, version, "staging", actor="tester", reason="test")
    registry.transition(store, NAME, version, "production", actor="tester", reason="test")


def cfg(*overrides: str) -> DeployConfig:
    # The cluster sees the store under its service name, not the test's loopback address.
    return load_config(DeployConfig, "gpu", ["s3_endpoint=minio-service.kubeflow:9000",
                                             "poll_s=0.01", "ready_timeout_s=5", *overrides])


def kserve_controller(reads_until_ready: int = 2, url: str = f"http://{NAME}.{NS}.example.com"):
    """Plays KServe: not Ready for a few reads after each spec change, then Ready at that generation."""
    seen: dict[int, int] = {}

    def controller(obj: dict) -> None:
        gen = obj["metadata"]["generation"]
        seen[gen] = seen.get(gen, 0) + 1
        canary = obj["spec"].get("canary") or []
        if seen[gen] <= reads_until_ready:
            obj["status"] = {"observedGeneration": gen - 1 if gen > 1 else gen,
                             "conditions": [{"type": "PredictorReady", "status": "False", "reason": "RevisionMissing"},
                                            {"type": "Ready", "status": "False", "reason": "RevisionMissing"}],
                             "modelStatus": {"transitionStatus": "InProgress",
                                             "states": {"activeModelState": "Loading"}}}
        else:
            obj["status"] = {"observedGeneration": gen, "url": url,
                             "conditions": [{"type": "PredictorReady", "status": "True"},
                                            {"type": "Ready", "status": "True"}],
                             "modelStatus": {"transitionStatus": "UpToDate",
                                             "states": {"activeModelState": "Loaded"}},
                             "canaryStatuses": [{"name": f"canary-{i}", "ready": True,
                                                 "trafficPercent": c["trafficPercent"]}
                                                for i, c in enumerate(canary)]}
    return controller


def crd_validate(doc: dict) -> None:
    from k8s_standin import crd_schemas, schema_errors, unknown_fields

    schema = crd_schemas(CRDS)[(doc["apiVersion"], doc["kind"])]
    assert schema_errors(doc, schema) == []
    assert unknown_fields(doc, schema) == []


ENTRY = {"name": NAME, "version": 3, "model_uri": f"s3://mlpipeline/charops/models/{NAME}/3/model"}
STABLE = {"name": NAME, "version": 2, "model_uri": f"s3://mlpipeline/charops/models/{NAME}/2/model"}


# --- rendering (no server) ---------------------------------------------------------------------

def test_render_production_validates_and_carries_what_serving_needs():
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} absent: CRD validation skipped")
    import kubernetes_validate

    sa, isvc = render(ENTRY, cfg("gpus=2"), s3_endpoint="ignored:1", s3_secure=False,
                      characters=["林小满", "Captain Reed"])
    crd_validate(isvc)
    kubernetes_validate.validate(sa, "1.30.0", strict=True)
    pred = isvc["spec"]["predictor"]
    model = pred["model"]
    assert model["storageUri"] == ENTRY["model_uri"]
    assert model["modelFormat"] == {"name": "huggingface"}
    assert "--backend=vllm" in model["args"] and f"--model_name={NAME}" in model["args"]
    assert "--tensor-parallel-size=2" in model["args"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pred["serviceAccountName"] == sa["metadata"]["name"] == "charops-serving"
    assert pred["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert sa["secrets"] == [{"name": "charops-store"}]
    assert sa["metadata"]["annotations"] == {"serving.kserve.io/s3-endpoint": "minio-service.kubeflow:9000",
                                             "serving.kserve.io/s3-usehttps": "0"}
    ann = isvc["metadata"]["annotations"]
    assert ann["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert json.loads(ann["charops.io/characters"]) == sorted(["林小满", "Captain Reed"])
    assert "canary" not in isvc["spec"] and "canaryTrafficPercent" not in json.dumps(isvc)


def test_render_canary_standard_uses_spec_canary_and_never_canary_traffic_percent():
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} absent: CRD validation skipped")
    _, isvc = render(ENTRY, cfg(), s3_endpoint="", s3_secure=False, characters=["a"],
                     stable=STABLE, canary_percent=10)
    crd_validate(isvc)
    assert "canaryTrafficPercent" not in json.dumps(isvc)  # Standard mode would ignore it silently
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == STABLE["model_uri"]
    [canary] = isvc["spec"]["canary"]
    assert canary["trafficPercent"] == 10
    assert canary["predictor"]["model"]["storageUri"] == ENTRY["model_uri"]
    assert isvc["metadata"]["annotations"]["charops.io/canary-version"] == "3"


def test_render_canary_serverless_uses_canary_traffic_percent():
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} absent: CRD validation skipped")
    _, isvc = render(ENTRY, cfg("mode=serverless"), s3_endpoint="", s3_secure=True, characters=[],
                     stable=STABLE, canary_percent=25)
    crd_validate(isvc)
    assert "canary" not in isvc["spec"]
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == ENTRY["model_uri"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_render_refuses_what_cannot_work():
    with pytest.raises(ConfigError, match="loopback"):
        render(ENTRY, cfg("s3_endpoint=127.0.0.1:8333"), s3_endpoint="", s3_secure=False, characters=[])
    with pytest.raises(ConfigError, match="not in an S3 store"):
        render({**ENTRY, "model_uri": "/data/models/3"}, cfg(), s3_endpoint="", s3_secure=False, characters=[])
    with pytest.raises(ConfigError, match="no production version"):
        render(ENTRY, cfg(), s3_endpoint="", s3_secure=False, characters=[], canary_percent=10)
    with pytest.raises(ConfigError, match="already the production version"):
        render(ENTRY, cfg(), s3_endpoint="", s3_secure=False, characters=[], stable=ENTRY, canary_percent=10)
    with pytest.raises(ConfigError, match="0-100"):
        render(ENTRY, cfg(), s3_endpoint="", s3_secure=False, characters=[], stable=STABLE, canary_percent=101)
    with pytest.raises(ConfigError, match="mode"):
        cfg("mode=knative")


def test_merge_diff_deletes_what_the_new_state_lacks():
    old = {"predictor": {"model": {"storageUri": "s3://a/1"}, "canaryTrafficPercent": 10}, "canary": [1]}
    new = {"predictor": {"model": {"storageUri": "s3://a/2"}}}
    assert merge_diff(old, new) == {"canary": None, "predictor": {"canaryTrafficPercent": None,
                                                                  "model": {"storageUri": "s3://a/2"}}}
    assert merge_diff(new, new) == {}


# --- against the stand-in API server -------------------------------------------------------

def test_deploy_creates_waits_with_live_status_and_returns_the_url(kube_standin, kube, store, tmp_path):
    kube_standin.controllers["InferenceService"] = kserve_controller(reads_until_ready=2)
    v1 = register_version(store, tmp_path, "a")
    to_production(store, v1["version"])
    c = cfg()
    plan = cluster.plan(store, NAME, c)
    lines: list[str] = []
    result = cluster.deploy(kube, plan, c, on_status=lines.append)
    assert result["action"] == "created" and result["version"] == 1
    assert result["url"] == f"http://{NAME}.{NS}.example.com"
    assert result["openai_base_url"].endswith("/openai/v1")
    assert lines[0].startswith("Ready=False") and "RevisionMissing" in lines[0] and "model=Loading" in lines[0]
    assert lines[-1].startswith("Ready=True")
    live = kube_standin.obj("inferenceservices", NAME)
    assert live["spec"]["predictor"]["model"]["storageUri"] == v1["model_uri"]
    assert json.loads(live["metadata"]["annotations"]["charops.io/characters"]) == ["Captain Reed", "林小满"]
    sa = kube_standin.obj("serviceaccounts", "charops-serving")
    assert sa["secrets"] == [{"name": "charops-store"}]
    # Writes asked for strict field validation.
    writes = [r for r in kube_standin.requests if r["method"] in ("POST", "PATCH")]
    assert writes and all(r["query"].get("fieldValidation") == "Strict" for r in writes)


def test_redeploy_patches_canary_then_promotes_it(kube_standin, kube, store, tmp_path):
    kube_standin.controllers["InferenceService"] = kserve_controller(reads_until_ready=1)
    v1 = register_version(store, tmp_path, "a")
    to_production(store, v1["version"])
    c = cfg()
    cluster.deploy(kube, cluster.plan(store, NAME, c), c)
    uid = kube_standin.obj("inferenceservices", NAME)["metadata"]["uid"]
    kube_standin.obj("inferenceservices", NAME)
    v2 = register_version(store, tmp_path, "b")

    result = cluster.deploy(kube, cluster.plan(store, NAME, c, version=v2["version"], canary=10), c)
    assert result["action"] == "patched" and result["version"] == 1 and result["canary_version"] == 2
    live = kube_standin.obj("inferenceservices", NAME)
    assert live["metadata"]["uid"] == uid  # patched in place, not recreated
    assert live["spec"]["predictor"]["model"]["storageUri"] == v1["model_uri"]
    assert live["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == v2["model_uri"]
    assert live["spec"]["canary"][0]["trafficPercent"] == 10
    assert live["metadata"]["annotations"]["charops.io/canary-percent"] == "10"
    assert live["metadata"]["generation"] == 2

    # The candidate wins: promote it, deploy production: the canary and its annotations go.
    to_production(store, v2["version"])
    result = cluster.deploy(kube, cluster.plan(store, NAME, c), c)
    live = kube_standin.obj("inferenceservices", NAME)
    assert result["version"] == 2 and result["canary_version"] is None
    assert "canary" not in live["spec"]
    assert live["spec"]["predictor"]["model"]["storageUri"] == v2["model_uri"]
    assert not any(k.startswith("charops.io/canary") for k in live["metadata"]["annotations"])
    assert live["metadata"]["annotations"]["charops.io/version"] == "2"


def test_serverless_canary_sets_then_clears_canary_traffic_percent(kube_standin, kube, store, tmp_path):
    kube_standin.controllers["InferenceService"] = kserve_controller(reads_until_ready=0)
    v1 = register_version(store, tmp_path, "a")
    to_production(store, v1["version"])
    c = cfg("mode=serverless")
    cluster.deploy(kube, cluster.plan(store, NAME, c), c)
    v2 = register_version(store, tmp_path, "b")
    cluster.deploy(kube, cluster.plan(store, NAME, c, version=v2["version"], canary=30), c)
    pred = kube_standin.obj("inferenceservices", NAME)["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 30 and pred["model"]["storageUri"] == v2["model_uri"]
    cluster.deploy(kube, cluster.plan(store, NAME, c, version=v2["version"]), c)
    pred = kube_standin.obj("inferenceservices", NAME)["spec"]["predictor"]
    assert "canaryTrafficPercent" not in pred and pred["model"]["storageUri"] == v2["model_uri"]


def test_rollback_restores_the_previous_production_version(kube_standin, kube, store, tmp_path):
    kube_standin.controllers["InferenceService"] = kserve_controller(reads_until_ready=0)
    v1, v2 = register_version(store, tmp_path, "a"), register_version(store, tmp_path, "b")
    c = cfg()
    to_production(store, 1)
    cluster.deploy(kube, cluster.plan(store, NAME, c), c)
    to_production(store, 2)
    cluster.deploy(kube, cluster.plan(store, NAME, c), c)
    assert kube_standin.obj("inferenceservices", NAME)["spec"]["predictor"]["model"]["storageUri"] == v2["model_uri"]

    result = cluster.rollback(kube, store, NAME, c, reason="v2 answers out of character")
    assert result["rolled_back_to"] == 1 and result["action"] == "patched"
    assert registry.production(store, NAME)["version"] == 1
    assert registry.stage_of(store, NAME, 2) == "archived"
    assert registry.history(store, NAME)[-1]["reason"] == "v2 answers out of character"
    live = kube_standin.obj("inferenceservices", NAME)
    assert live["spec"]["predictor"]["model"]["storageUri"] == v1["model_uri"]
    assert live["metadata"]["annotations"]["charops.io/version"] == "1"
    # Every call the stand-in saw is one the client code declares (so the Role grants it).
    from k8s_rbac import code_permissions

    declared = {(r, v) for _, r, v in code_permissions()}
    assert {(r, v) for v, r in kube_standin.calls} <= declared


def test_wait_times_out_with_the_last_status(kube_standin, kube, store, tmp_path):
    kube_standin.controllers["InferenceService"] = kserve_controller(reads_until_ready=10**6)
    to_production(store, register_version(store, tmp_path, "a")["version"])
    c = cfg("ready_timeout_s=0", "poll_s=0.01")
    with pytest.raises(cluster.DeployError, match=r"not Ready after 0 s; last status: Ready=False .*RevisionMissing"):
        cluster.deploy(kube, cluster.plan(store, NAME, c), c)


def test_a_model_that_cannot_load_fails_fast_with_kserves_reason(kube_standin, kube, store, tmp_path):
    def broken(obj):
        obj["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "ModelLoadFailed"}],
                         "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                                         "states": {"activeModelState": "FailedToLoad"},
                                         "lastFailureInfo": {"reason": "ModelLoadFailed",
                                                             "message": "config.json: unknown model_type"}}}
    kube_standin.controllers["InferenceService"] = broken
    to_production(store, register_version(store, tmp_path, "a")["version"])
    c = cfg("ready_timeout_s=600")  # fails long before this
    with pytest.raises(cluster.DeployError, match="BlockedByFailedLoad: ModelLoadFailed config.json: unknown model_type"):
        cluster.deploy(kube, cluster.plan(store, NAME, c), c)


def test_plan_refuses_models_without_characters_or_production(store, tmp_path):
    c = cfg()
    with pytest.raises(cluster.DeployError, match="no production version"):
        cluster.plan(store, NAME, c)  # nothing registered
    register_version(store, tmp_path, "a", characters=None)
    with pytest.raises(cluster.DeployError, match="no production version"):
        cluster.plan(store, NAME, c)
    with pytest.raises(cluster.DeployError, match="has no characters.jsonl"):
        cluster.plan(store, NAME, c, version=1)


def test_dry_run_manifests_parse_back(store, tmp_path):
    to_production(store, register_version(store, tmp_path, "a")["version"])
    docs = list(yaml.safe_load_all(cluster.manifests_yaml(cluster.plan(store, NAME, cfg()))))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "InferenceService"]
    assert "林小满" in docs[1]["metadata"]["annotations"]["charops.io/characters"]


# --- the client: retries, timeouts, errors, conflicts -------------------------------------------

def test_client_retries_transient_errors_then_gives_up(kube_standin, kube):
    kube_standin.fail_next(2, 503)
    assert kube.get(INFERENCESERVICES, "absent", missing_ok=True) is None  # third attempt answers 404
    kube_standin.fail_next(3, 503)
    with pytest.raises(KubeError, match="503 injected fault") as err:
        kube.get(INFERENCESERVICES, "absent", missing_ok=True)
    assert err.value.status == 503


def test_client_read_timeout_is_bounded(kube_standin):
    kube = connect(kubeconfig=str(kube_standin.kubeconfig), timeout=(1.0, 0.2), attempts=2, backoff_s=0.01)
    kube_standin.stall_next(2, 1.0)
    with pytest.raises(KubeError, match="unreachable: GET .* failed 2 times"):
        kube.get(INFERENCESERVICES, "x", missing_ok=True)


def test_client_errors_are_one_line_with_the_servers_message(kube_standin, tmp_path):
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(kube_standin.kubeconfig.read_text().replace(kube_standin.token, "wrong"))
    with pytest.raises(KubeError, match=r"401 Unauthorized \(credentials rejected"):
        connect(kubeconfig=str(bad)).get(INFERENCESERVICES, "x")
    with pytest.raises(KubeError, match="no kube config"):
        connect(kubeconfig=str(tmp_path / "absent"))
    assert connect(kubeconfig=str(kube_standin.kubeconfig)).namespace == NS  # the context's
    assert connect("other", kubeconfig=str(kube_standin.kubeconfig)).namespace == "other"


def test_standin_rejects_unknown_fields_and_bad_values(kube_standin, kube):
    """The stand-in's validation is real: a typo or a wrong type is refused, as a cluster would."""
    _, isvc = render(ENTRY, cfg(), s3_endpoint="", s3_secure=False, characters=[])
    typo = json.loads(json.dumps(isvc))
    typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(KubeError, match=r'400 strict decoding error: unknown field "spec.predictor.model.storageURI"'):
        kube.create(INFERENCESERVICES, typo)
    wrong = json.loads(json.dumps(isvc))
    wrong["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(KubeError, match="422 .*minReplicas: 'one' is not of type 'integer'"):
        kube.create(INFERENCESERVICES, wrong)
    assert kube_standin.obj("inferenceservices", NAME) is None


def test_apply_rereads_after_a_conflicting_change(kube_standin, kube, store, tmp_path):
    to_production(store, register_version(store, tmp_path, "a")["version"])
    plan = cluster.plan(store, NAME, cfg())
    assert cluster.apply(kube, plan) == "created"
    live = kube.get(INFERENCESERVICES, NAME)
    # Someone else changes the service after our read: a patch on the stale read is a 409 ...
    kube.patch(INFERENCESERVICES, NAME, {"metadata": {"annotations": {"team": "ml"}}})
    from charops.deploy.inference import patch_for

    with pytest.raises(KubeError) as err:
        kube.patch(INFERENCESERVICES, NAME, patch_for(live, plan.inference_service))
    assert err.value.status == 409
    # ... and apply() re-reads and keeps the other writer's annotation.
    assert cluster.apply(kube, plan) == "patched"
    assert kube_standin.obj("inferenceservices", NAME)["metadata"]["annotations"]["team"] == "ml"
    assert kube.get(SERVICEACCOUNTS, "charops-serving")["secrets"] == [{"name": "charops-store"}]


def test_stage_staging_serves_the_staging_version(store, tmp_path):
    register_version(store, tmp_path, "a")
    register_version(store, tmp_path, "b")
    to_production(store, 1)
    registry.transition(store, NAME, 2, "staging", actor="tester", reason="test")
    p = cluster.plan(store, NAME, cfg(), stage="staging")
    assert p.entry["version"] == 2
    assert p.inference_service["metadata"]["annotations"]["charops.io/version"] == "2"
    with pytest.raises(cluster.DeployError, match="no version in stage 'archived'"):
        cluster.plan(store, NAME, cfg(), stage="archived")


def test_kubeconfig_env_may_list_several_files(kube_standin, tmp_path, monkeypatch):
    other = tmp_path / "other-kubeconfig"
    other.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{kube_standin.kubeconfig}:{other}")
    kube = connect()
    assert kube.namespace == NS and kube.get(INFERENCESERVICES, "x", missing_ok=True) is None
