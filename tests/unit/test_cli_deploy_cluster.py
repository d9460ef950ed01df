"""``charops deploy NAME`` (cluster) and ``charops rollback NAME`` through the CLI.

    .venv/bin/python -m pytest tests/unit/test_cli_deploy_cluster.py -x -q

Against the STAND-IN Kubernetes API (tests/k8s_standin.py; KServe played by a controller that
marks the service Ready) and a real S3 registry (weed mini).
"""

from __future__ import annotations

import json

import pytest
import yaml
from test_deploy_cluster import NAME, kserve_controller, register_version, to_production
from typer.testing import CliRunner

from charops.cli.main import app


@pytest.fixture
def env(s3_server, s3_bucket, monkeypatch):
    from charops.storage import open_store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    monkeypatch.setenv("CHAROPS_S3_ENDPOINT", s3_server["url"])
    monkeypatch.setenv("CHAROPS_STORE", f"s3://{s3_bucket}/charops")
    monkeypatch.setenv("CHAROPS_ACTOR", "tester")
    return open_store(f"s3://{s3_bucket}/charops")


SETTINGS = ["s3_endpoint=minio-service.kubeflow:9000", "poll_s=0.01", "ready_timeout_s=5"]


def cli(*args):
    return CliRunner().invoke(app, list(args))


def test_dry_run_prints_manifests_and_touches_nothing(env, tmp_path):
    to_production(env, register_version(env, tmp_path, "a")["version"])
    r = cli("deploy", NAME, "--dry-run", *SETTINGS, "gpus=2")
    assert r.exit_code == 0, r.output
    sa, isvc = yaml.safe_load_all(r.stdout)
    assert sa["kind"] == "ServiceAccount" and isvc["kind"] == "InferenceService"
    assert isvc["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    cpu = cli("deploy", NAME, "--dry-run", "--config", "cpu", *SETTINGS)
    model = list(yaml.safe_load_all(cpu.stdout))[1]["spec"]["predictor"]["model"]
    assert "--backend=huggingface" in model["args"] and "nvidia.com/gpu" not in json.dumps(model)


def test_deploy_canary_and_rollback(env, tmp_path, kube_standin):
    kube_standin.controllers["InferenceService"] = kserve_controller(reads_until_ready=2)
    kc = ["--kubeconfig", str(kube_standin.kubeconfig)]
    register_version(env, tmp_path, "a")
    register_version(env, tmp_path, "b")
    to_production(env, 1)
    r = cli("deploy", NAME, *kc, "--json", *SETTINGS)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["action"] == "created" and out["version"] == 1 and out["url"].startswith("http://")
    assert "Ready=False" in r.stderr and "Ready=True" in r.stderr  # live status

    r = cli("deploy", NAME, *kc, "--version", "2", "--canary", "20", *SETTINGS)
    assert r.exit_code == 0, r.output
    assert "canary v2 at 20%" in r.stderr
    live = kube_standin.obj("inferenceservices", NAME)
    assert live["spec"]["canary"][0]["trafficPercent"] == 20

    to_production(env, 2)
    r = cli("deploy", NAME, *kc, "-q", *SETTINGS)
    assert r.exit_code == 0 and r.output == ""  # -q: errors only (no status lines, no URL)
    assert kube_standin.obj("inferenceservices", NAME)["metadata"]["annotations"]["charops.io/version"] == "2"
    r = cli("rollback", NAME, *kc, "--reason", "v2 forgets who it is", *SETTINGS)
    assert r.exit_code == 0, r.output
    assert "production is v1 again" in r.stderr
    live = kube_standin.obj("inferenceservices", NAME)
    assert live["metadata"]["annotations"]["charops.io/version"] == "1" and "canary" not in live["spec"]
    to_production(env, 2)
    r = cli("rollback", NAME, *kc, "--reason", "again", "-q", *SETTINGS)
    assert r.exit_code == 0 and r.output == ""
    assert kube_standin.obj("inferenceservices", NAME)["metadata"]["annotations"]["charops.io/version"] == "1"


def test_user_errors_are_one_line(env, tmp_path, kube_standin):
    to_production(env, register_version(env, tmp_path, "a")["version"])
    r = cli("deploy", NAME, "--canary", "10", *SETTINGS)
    assert r.exit_code == 2 and r.stderr.startswith("error: --canary needs --version")
    r = cli("deploy", NAME, "--dry-run", "s3_endpoint=127.0.0.1:9000")
    assert r.exit_code == 2 and "loopback" in r.stderr and "Traceback" not in r.output
    r = cli("rollback", NAME, "--kubeconfig", str(kube_standin.kubeconfig), *SETTINGS)
    assert r.exit_code == 2 and "nothing to roll back to" in r.stderr
    r = cli("deploy", NAME, "--kubeconfig", str(tmp_path / "nope"), *SETTINGS)
    assert r.exit_code == 2 and "no kube config" in r.stderr
