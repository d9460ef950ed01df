"""Multi-node training through a Kubeflow Trainer TrainJob: render, submit, watch, fail, clean up.

    .venv/bin/python -m pytest tests/unit/test_trainjob.py -x -q

The Kubernetes API is a STAND-IN (tests/k8s_standin.py), not a cluster: it validates the
TrainJob against the upstream CRD in ../shared/crds (unknown fields rejected); Kubeflow
Trainer and JobSet are played by the small controllers below, which set status and add the
rank-0 pod with its log the way they would. The store is a real S3 server (weed mini).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from k8s_rbac import code_permissions
from k8s_standin import crd_schemas, schema_errors, unknown_fields

from charops.config import load_config
from charops.deploy import trainjob
from charops.deploy.trainjob import TrainJobConfig, TrainJobError
from charops.errors import ConfigError
from charops.train import launch

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT.parent / "shared" / "crds"
NS = "charops-test"
URIS = {"model_uri": "s3://mlpipeline/v2/artifacts/run/pretrain/model",
        "dataset_uri": "s3://mlpipeline/v2/artifacts/run/data_prep/dataset",
        "output_uri": "s3://mlpipeline/charops/trainjobs/j/model"}


def body(name="charops-sft-test", **cfg_overrides):
    cfg = TrainJobConfig(**{"nodes": 2, "procs_per_node": 8, **cfg_overrides})
    return trainjob.render(name, cfg, stage="sft", config="qwen2-7b-zero3",
                           overrides=["max_steps=10"], **URIS)


def now():
    return "2026-12-01T20:00:00Z"


def trainer_controller(standin, *, polls_running=2, outcome="Complete", reason="JobsCompleted",
                       message="", log_lines=("step 1 loss 2.0", "step 2 loss 1.5", "step 3 loss 1.2"),
                       on_complete=None):
    """Plays Kubeflow Trainer + JobSet: Created, then the rank-0 pod logs a line per read, then `outcome`."""
    reads: dict[str, int] = {}

    def controller(job):
        name = job["metadata"]["name"]
        n = reads[name] = reads.get(name, -1) + 1
        conds = [{"type": "Created", "status": "True", "reason": "JobsCreationSucceeded",
                  "message": "jobs created", "lastTransitionTime": now()}]
        if n == 1:
            standin.add_pod(f"{name}-node-0-0-abcde", {trainjob.JOBSET_LABEL: name,
                                                       "jobset.sigs.k8s.io/replicatedjob-name": "node",
                                                       "batch.kubernetes.io/job-completion-index": "0"})
            standin.add_pod(f"{name}-node-0-1-fghij", {trainjob.JOBSET_LABEL: name,
                                                       "jobset.sigs.k8s.io/replicatedjob-name": "node",
                                                       "batch.kubernetes.io/job-completion-index": "1"},
                            log="rank 1 must not be streamed\n")
        if 1 <= n <= len(log_lines):
            standin.append_log(f"{name}-node-0-0-abcde", log_lines[n - 1] + "\n")
        running = {"name": "node", "active": 2, "ready": 2, "succeeded": 0, "failed": 0, "suspended": 0}
        if n > polls_running:
            conds.append({"type": outcome, "status": "True", "reason": reason, "message": message,
                          "lastTransitionTime": now()})
            done = {**running, "active": 0, "ready": 0,
                    "succeeded": 1 if outcome == "Complete" else 0, "failed": 0 if outcome == "Complete" else 1}
            job["status"] = {"conditions": conds, "jobsStatus": [done]}
            if on_complete and outcome == "Complete":
                on_complete(job)
        else:
            job["status"] = {"conditions": conds, "jobsStatus": [running]}
    return controller


def test_render_validates_against_the_crd():
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} absent: CRD validation skipped")
    b = body()
    schema = crd_schemas(CRDS)[(b["apiVersion"], b["kind"])]
    assert schema_errors(b, schema) == [] and unknown_fields(b, schema) == []
    t = b["spec"]["trainer"]
    assert b["spec"]["runtimeRef"]["name"] == "charops-deepspeed"
    assert t["numNodes"] == 2 and t["numProcPerNode"] == 8
    assert t["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8"}
    assert t["command"] == ["python", "-m", "charops.train.launch"]
    args = t["args"]
    assert args[:3] == ["node", "--stage", "sft"]
    for flag, uri in (("--model", URIS["model_uri"]), ("--dataset", URIS["dataset_uri"]), ("--output", URIS["output_uri"])):
        assert args[args.index(flag) + 1] == uri
    assert args[args.index("--config") + 1] == "qwen2-7b-zero3"
    assert args[-2:] == ["--", "max_steps=10"]
    # The node entry point parses exactly what the TrainJob passes.
    assert launch.torchrun_command("sft", 8, ["x"], local=False)[-3:] == ["-m", "charops.train.sft", "x"]


def test_render_refuses_local_paths_and_bad_settings():
    with pytest.raises(ConfigError, match="model '/tmp/m' must be in the S3 store"):
        trainjob.render("j", TrainJobConfig(), stage="sft", config="", overrides=[],
                        **{**URIS, "model_uri": "/tmp/m"})
    with pytest.raises(ConfigError, match="cleanup"):
        load_config(TrainJobConfig, None, ["cleanup=sometimes"])
    with pytest.raises(ConfigError, match="nodes"):
        load_config(TrainJobConfig, None, ["nodes=0"])
    name = trainjob.job_name("sft", "Run 42/Ü" * 10)
    assert len(name) <= 63 and name[0].isalpha() and name == name.lower()


def test_job_name_is_a_valid_trainjob_name():
    import re
    for hint in ("", "abc", "--", "x" * 100):
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", trainjob.job_name("dpo", hint))


def test_run_streams_status_and_rank0_log_then_deletes(kube_standin, kube):
    kube_standin.controllers["TrainJob"] = trainer_controller(kube_standin, polls_running=4)
    statuses, logs = [], []
    cfg = TrainJobConfig(poll_s=0.01, timeout_s=30)
    b = body()
    job = trainjob.run(kube, b, cfg, on_status=statuses.append, on_log=logs.append)
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    assert logs == ["step 1 loss 2.0", "step 2 loss 1.5", "step 3 loss 1.2"]  # rank 0 only, each once
    assert statuses[0].startswith("Created (JobsCreationSucceeded); node: active=2 ready=2")
    assert statuses[-1].startswith("Created (JobsCreationSucceeded), Complete (JobsCompleted)")
    assert kube_standin.obj("trainjobs", b["metadata"]["name"]) is None  # cleanup=on_success
    assert not any(k[0] == "pods" for k in kube_standin.objects)  # its pods went with it
    # Every call the stand-in saw is one the client code declares (and so the Role grants).
    declared = {(r, v) for _, r, v in code_permissions()}
    assert set((r, v) for v, r in kube_standin.calls) <= declared


def test_a_failed_job_fails_with_its_reason_and_is_kept(kube_standin, kube):
    kube_standin.controllers["TrainJob"] = trainer_controller(
        kube_standin, outcome="Failed", reason="BackoffLimitExceeded",
        message="node-0: OOMKilled (exit 137)")
    statuses = []
    b = body()
    with pytest.raises(TrainJobError, match=r"failed: BackoffLimitExceeded: node-0: OOMKilled \(exit 137\)"):
        trainjob.run(kube, b, TrainJobConfig(poll_s=0.01), on_status=statuses.append)
    assert kube_standin.obj("trainjobs", b["metadata"]["name"]) is not None
    assert statuses[-1].startswith("kept TrainJob") and "kubectl delete trainjob" in statuses[-1]


def test_cleanup_always_deletes_a_failed_job_and_never_keeps_a_good_one(kube_standin, kube):
    kube_standin.controllers["TrainJob"] = trainer_controller(kube_standin, outcome="Failed", reason="Failed")
    b = body("charops-sft-a")
    with pytest.raises(TrainJobError):
        trainjob.run(kube, b, TrainJobConfig(poll_s=0.01, cleanup="always"))
    assert kube_standin.obj("trainjobs", "charops-sft-a") is None
    kube_standin.controllers["TrainJob"] = trainer_controller(kube_standin)
    trainjob.run(kube, body("charops-sft-b"), TrainJobConfig(poll_s=0.01, cleanup="never"))
    assert kube_standin.obj("trainjobs", "charops-sft-b") is not None


def test_timeout_names_the_last_status(kube_standin, kube):
    kube_standin.controllers["TrainJob"] = trainer_controller(kube_standin, polls_running=10**6)
    with pytest.raises(TrainJobError, match=r"did not finish in 0 s; last status: Created"):
        trainjob.run(kube, body(), TrainJobConfig(poll_s=0.01, timeout_s=0))


def test_submit_rejected_by_the_api_is_a_clear_error(kube_standin, kube):
    b = body()
    b["spec"]["trainer"]["numProcsPerNode"] = 8  # a typo the CRD does not know
    with pytest.raises(TrainJobError, match='could not submit.*unknown field "spec.trainer.numProcsPerNode"'):
        trainjob.run(kube, b, TrainJobConfig(poll_s=0.01))
    b = body()
    b["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(TrainJobError, match="could not submit.*422"):
        trainjob.run(kube, b, TrainJobConfig(poll_s=0.01))


def test_train_on_cluster_returns_the_model_node0_published(kube_standin, kube, s3_server, s3_bucket,
                                                            monkeypatch, tmp_path):
    from charops.storage import open_store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    monkeypatch.setenv("CHAROPS_S3_ENDPOINT", s3_server["url"])
    store = open_store(f"s3://{s3_bucket}/charops")
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (trained / "training_summary.json").write_text(json.dumps({"steps": 3}))

    def node0_publishes(job):  # what `charops.train.launch node` does on node 0
        out = job["spec"]["trainer"]["args"][job["spec"]["trainer"]["args"].index("--output") + 1]
        launch.publish(trained, out)

    kube_standin.controllers["TrainJob"] = trainer_controller(kube_standin, on_complete=node0_publishes)
    lines = []
    dest = launch.train_on_cluster(
        "sft", "tiny-cpu", ["max_steps=3"], model_uri=f"minio://{s3_bucket}/v2/artifacts/base",
        dataset_uri=f"s3://{s3_bucket}/v2/artifacts/data", dest=tmp_path / "out",
        cfg=TrainJobConfig(poll_s=0.01), kube=kube, store=store, log=lines.append)
    assert json.loads((dest / "training_summary.json").read_text()) == {"steps": 3}
    assert any(line.startswith("[rank 0] step 1") for line in lines)
    sent = next(r["body"] for r in kube_standin.requests if r["method"] == "POST")
    assert f"s3://{s3_bucket}/v2/artifacts/base" in sent["spec"]["trainer"]["args"]  # minio:// -> s3://

    kube_standin.controllers["TrainJob"] = trainer_controller(kube_standin)  # publishes nothing
    with pytest.raises(launch.LaunchError, match="published no model"):
        launch.train_on_cluster("sft", "", [], model_uri=f"s3://{s3_bucket}/m", dataset_uri=f"s3://{s3_bucket}/d",
                                dest=tmp_path / "out2", cfg=TrainJobConfig(poll_s=0.01), kube=kube,
                                store=store, log=lines.append)


def test_resolve_gpus_defaults_to_the_accelerator_limit():
    assert launch.resolve_gpus(-1, 4) == 4
    assert launch.resolve_gpus(2, 4) == 2
    assert launch.resolve_gpus(-1, 0) == 1  # CPU step: one process
    cmd = launch.torchrun_command("dpo", 4, ["--config", "c.yaml"], local=True)
    assert "--nproc-per-node=4" in cmd and "--master-addr=127.0.0.1" in cmd
    assert cmd[-4:] == ["-m", "charops.train.dpo", "--config", "c.yaml"]


class _Artifact:
    """Just what a KFP artifact offers run_training: uri, path, metadata, log_metric."""

    def __init__(self, uri: str, path: Path):
        self.uri, self.path, self.metadata, self.metrics = uri, str(path), {}, {}

    def log_metric(self, name, value):
        self.metrics[name] = value


def test_training_component_with_nodes_runs_a_trainjob(kube_standin, s3_server, s3_bucket, monkeypatch, tmp_path):
    """run_training (the body of the pretrain/sft/dpo components) with nodes=2, end to end."""
    from charops.components.common import run_training

    for k, v in {"AWS_ACCESS_KEY_ID": s3_server["access_key"], "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"],
                 "CHAROPS_S3_ENDPOINT": s3_server["url"], "CHAROPS_STORE": f"s3://{s3_bucket}/charops",
                 "KUBECONFIG": str(kube_standin.kubeconfig)}.items():
        monkeypatch.setenv(k, v)
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (trained / "training_summary.json").write_text(json.dumps({"steps": 3, "train_loss": 2.5, "world_size": 8}))

    def node0_publishes(job):
        args = job["spec"]["trainer"]["args"]
        launch.publish(trained, args[args.index("--output") + 1])

    kube_standin.controllers["TrainJob"] = trainer_controller(kube_standin, on_complete=node0_publishes)
    model = _Artifact(f"minio://{s3_bucket}/v2/artifacts/base/model", tmp_path / "in-model")
    dataset = _Artifact(f"minio://{s3_bucket}/v2/artifacts/prep/dataset", tmp_path / "in-data")
    out = _Artifact(f"minio://{s3_bucket}/v2/artifacts/sft/model", tmp_path / "out" / "model")
    metrics, report = _Artifact("", tmp_path / "metrics"), _Artifact("", tmp_path / "report.md")

    monkeypatch.setattr(launch, "run_stage", lambda *a, **k: pytest.fail("nodes=2 trained in the step's pod"))
    summary = run_training("sft", "tiny-cpu", ["max_steps=3"], model, dataset, out, metrics, report,
                           gpus=4, nodes=2, trainjob_overrides=["cleanup=never", "cpu=16", "poll_s=0.01"])
    assert summary["steps"] == 3 and metrics.metrics["train_loss"] == 2.5
    assert json.loads((Path(out.path) / "config.json").read_text()) == {"model_type": "qwen2"}
    assert out.metadata["sha256"] and Path(report.path).read_text().startswith("# Supervised fine-tuning")
    [job] = [o for k, o in kube_standin.objects.items() if k[0] == "trainjobs"]  # kept: cleanup=never
    t = job["spec"]["trainer"]
    assert t["numNodes"] == 2 and t["numProcPerNode"] == 4 and t["resourcesPerNode"]["requests"]["cpu"] == "16"
    assert t["args"][t["args"].index("--model") + 1] == f"s3://{s3_bucket}/v2/artifacts/base/model"
    assert t["args"][-2:] == ["--", "max_steps=3"]
