"""Multi-node training as a Kubeflow Trainer ``TrainJob`` on the ``charops-deepspeed`` runtime.

A training step with ``nodes > 1`` does not train in its own pod: it renders a TrainJob whose
every node runs ``python -m charops.train.launch node`` (download the model and dataset from
the store, ``torchrun`` the stage across nodes with the Trainer's ``PET_*`` rendezvous, node 0
publishes the trained model back to the store), submits it, streams its status and rank-0
log, fails with the job's own reason, deletes or keeps it per ``cleanup``, and the step
downloads the published model as its output artifact::

    from charops.deploy.trainjob import TrainJobConfig, render, run
    body = render("sft-3f2a", TrainJobConfig(nodes=2, procs_per_node=8), stage="sft",
                  config="qwen2-7b-zero3", overrides=[], model_uri="s3://...", dataset_uri="s3://...",
                  output_uri="s3://mlpipeline/charops/trainjobs/sft-3f2a/model")
    run(kube, body, cfg, on_status=print, on_log=print)
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from charops.deploy.kube import POD_LOGS, PODS, TRAINJOBS, Kube, KubeError
from charops.errors import CharopsError, ConfigError

TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
# Labels JobSet puts on the pods of a TrainJob (JobSet name = TrainJob name; one replicated
# job "node" in the charops runtime; completion index 0 = node rank 0).
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
RANK0_SELECTOR = "jobset.sigs.k8s.io/replicatedjob-name=node,batch.kubernetes.io/job-completion-index=0"
CLEANUP = ("always", "on_success", "never")


class TrainJobError(CharopsError):
    """The TrainJob failed, timed out or could not be submitted."""


@dataclass
class TrainJobConfig:
    """How a multi-node training step runs as a TrainJob."""

    stage: ClassVar[str] = "trainjob"

    runtime: str = field(default="charops-deepspeed", metadata={"help": "ClusterTrainingRuntime the job runs on (manifests/runtime/)."})
    nodes: int = field(default=2, metadata={"help": "Training nodes (pods)."})
    procs_per_node: int = field(default=1, metadata={"help": "Processes (GPUs) per node."})
    accelerator_type: str = field(default="nvidia.com/gpu", metadata={"help": "Accelerator resource name (procs_per_node of them per node)."})
    cpu: str = field(default="8", metadata={"help": "CPU request per node."})
    memory: str = field(default="64Gi", metadata={"help": "Memory request per node."})
    image: str = field(default="", metadata={"help": "Image of the nodes (empty = the charops image the components run in)."})
    cleanup: str = field(default="on_success", metadata={"help": "Delete the TrainJob when done: always, on_success (keep failed ones to debug) or never."})
    timeout_s: int = field(default=86400, metadata={"help": "Longest wait for the job, seconds."})
    poll_s: float = field(default=10.0, metadata={"help": "Seconds between status and log reads."})

    def validate(self) -> None:
        if self.nodes < 1 or self.procs_per_node < 1:
            raise ConfigError("trainjob config: nodes and procs_per_node must be >= 1")
        if self.cleanup not in CLEANUP:
            raise ConfigError(f"trainjob config: cleanup '{self.cleanup}' is not one of {', '.join(CLEANUP)}")
        if self.poll_s <= 0 or self.timeout_s < 0:
            raise ConfigError("trainjob config: poll_s must be > 0 and timeout_s >= 0")


def job_name(stage: str, hint: str = "") -> str:
    """A fresh RFC 1035 name (the TrainJob CRD requires one): ``charops-<stage>-<hint>-<random>``."""
    hint = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:20].strip("-")
    base = "-".join(p for p in ("charops", stage, hint) if p)
    return f"{base[:54]}-{uuid.uuid4().hex[:8]}"


def render(name: str, cfg: TrainJobConfig, *, stage: str, config: str, overrides: list[str],
           model_uri: str, dataset_uri: str, output_uri: str,
           extra_uris: dict[str, str] | None = None) -> dict:
    """The TrainJob body: every node runs ``charops.train.launch node`` for ``stage``."""
    from charops.pipeline.image import default_image

    for what, uri in [("model", model_uri), ("dataset", dataset_uri), ("output", output_uri),
                      *(extra_uris or {}).items()]:
        if not str(uri).startswith("s3://"):
            raise ConfigError(f"multi-node {stage}: {what} '{uri}' must be in the S3 store every "
                              "node can read (s3://...)")
    args = ["node", "--stage", stage, "--model", model_uri, "--dataset", dataset_uri,
            "--output", output_uri, "--nproc-per-node", str(cfg.procs_per_node)]
    if config:
        args += ["--config", config]
    for key, uri in sorted((extra_uris or {}).items()):
        args += ["--path", f"{key}={uri}"]
    args += ["--", *[str(o) for o in overrides]]
    requests = {"cpu": cfg.cpu, "memory": cfg.memory, cfg.accelerator_type: str(cfg.procs_per_node)}
    return {
        "apiVersion": TRAINJOB_API, "kind": "TrainJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "charops",
                                              "charops.io/stage": stage}},
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                           "name": cfg.runtime},
            "trainer": {"image": cfg.image or default_image(), "numNodes": cfg.nodes,
                        "numProcPerNode": cfg.procs_per_node,
                        "command": ["python", "-m", "charops.train.launch"], "args": args,
                        "resourcesPerNode": {"requests": requests,
                                             "limits": {cfg.accelerator_type: str(cfg.procs_per_node)}}},
        },
    }


def _condition(job: dict, kind: str) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def describe(job: dict) -> str:
    """One status line: the conditions that hold, child jobs' counts, progress when reported."""
    status = job.get("status") or {}
    conds = [c["type"] + (f" ({c['reason']})" if c.get("reason") else "")
             for c in status.get("conditions") or [] if c.get("status") == "True"]
    parts = [", ".join(conds) or "Pending"]
    for js in status.get("jobsStatus") or []:
        parts.append(f"{js.get('name')}: active={js.get('active', 0)} ready={js.get('ready', 0)} "
                     f"succeeded={js.get('succeeded', 0)} failed={js.get('failed', 0)}")
    progress = (status.get("trainerStatus") or {}).get("progressPercentage")
    if progress is not None:
        parts.append(f"{progress}%")
    return "; ".join(parts)


class _Rank0Log:
    """Streams the rank-0 pod's log: each read returns the lines not seen yet."""

    def __init__(self, kube: Kube, name: str):
        self.kube, self.name, self.pod, self.seen = kube, name, None, 0

    def new_lines(self) -> list[str]:
        if self.pod is None:
            pods = self.kube.list(PODS, label_selector=f"{JOBSET_LABEL}={self.name},{RANK0_SELECTOR}")
            if not pods:
                return []
            self.pod = pods[0]["metadata"]["name"]
        try:
            # The whole log each time: rank 0 logs a line per logging step, which stays small.
            lines = self.kube.log(POD_LOGS, self.pod).splitlines()
        except KubeError as exc:
            if exc.status in (400, 404):  # container not started yet / pod replaced
                if exc.status == 404:
                    self.pod, self.seen = None, 0
                return []
            raise
        fresh, self.seen = lines[self.seen:], max(self.seen, len(lines))
        return fresh


def watch(kube: Kube, name: str, cfg: TrainJobConfig, *,
          on_status: Callable[[str], None] | None = None,
          on_log: Callable[[str], None] | None = None,
          clock: Callable[[], float] = time.monotonic) -> dict:
    """Wait for the TrainJob to complete; the final object. Raises with the job's reason."""
    deadline = clock() + cfg.timeout_s
    log = _Rank0Log(kube, name)
    last = None
    while True:
        job = kube.get(TRAINJOBS, name, missing_ok=True)
        if job is None:
            raise TrainJobError(f"TrainJob {kube.namespace}/{name} disappeared while running "
                                "(deleted by someone else?)")
        line = describe(job)
        if on_status is not None and line != last:
            on_status(line)
        last = line
        if on_log is not None:
            for text in log.new_lines():
                on_log(text)
        failed = _condition(job, "Failed")
        if failed:
            raise TrainJobError(f"TrainJob {kube.namespace}/{name} failed: {failed.get('reason', '')}: "
                                f"{failed.get('message', '')}".rstrip(": "))
        if _condition(job, "Complete"):
            if on_log is not None:  # the last lines written before the pods ended
                for text in log.new_lines():
                    on_log(text)
            return job
        if clock() >= deadline:
            raise TrainJobError(f"TrainJob {kube.namespace}/{name} did not finish in "
                                f"{cfg.timeout_s} s; last status: {line}")
        time.sleep(cfg.poll_s)


def run(kube: Kube, body: dict, cfg: TrainJobConfig, *,
        on_status: Callable[[str], None] | None = None,
        on_log: Callable[[str], None] | None = None) -> dict:
    """Submit, watch, clean up per ``cfg.cleanup``; the finished TrainJob."""
    name = body["metadata"]["name"]
    try:
        kube.create(TRAINJOBS, body)
    except KubeError as exc:
        raise TrainJobError(f"could not submit TrainJob {kube.namespace}/{name}: {exc}") from None
    ok = False
    try:
        job = watch(kube, name, cfg, on_status=on_status, on_log=on_log)
        ok = True
        return job
    finally:
        if cfg.cleanup == "always" or (cfg.cleanup == "on_success" and ok):
            kube.delete(TRAINJOBS, name)
        elif on_status is not None:
            on_status(f"kept TrainJob {kube.namespace}/{name} (cleanup={cfg.cleanup}); delete it "
                      f"with: kubectl delete trainjob {name} -n {kube.namespace}")
