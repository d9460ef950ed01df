"""Kubernetes and task settings shared by every charops pipeline.

The pipelines (``pipelines/*.py``) only wire components together; how a task runs on a
cluster (GPU type and count, node selector, tolerations, secrets as environment, the model
cache PVC, timeouts, retries, caching) is decided here, once, from two sources:

* pipeline parameters (``Placement``): whatever KFP 2.17 resolves at run time, so a run can
  change it with ``charops submit --param accelerator_limit=4``: accelerator type and limit,
  node selector (``add_node_selector_json``), tolerations (``add_toleration_json``), secret
  names (``use_secret_as_env``) and the PVC name (``mount_pvc``);
* ``configs/pipeline/cluster.yaml`` (``ClusterConfig``), read at compile time, for what KFP
  only takes as literals: ``kubernetes.set_timeout`` (int), ``set_retry`` (int),
  ``set_caching_options`` (bool), the secret key -> variable maps, the mount path, and the
  defaults of the parameters above.

Locally (``kfp.local``) the kubernetes settings are ignored and ``set_env_variable`` is
applied, which is why no environment variable is set here::

    from charops.pipeline.tasks import load_cluster_config
    cluster = load_cluster_config()            # configs/pipeline/cluster.yaml
    cluster = load_cluster_config("my.yaml", ["retries=0"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kfp import dsl, kubernetes
from kfp.dsl.pipeline_channel import PipelineChannel

from charops.config import load_config
from charops.errors import ConfigError
from charops.storage import KFP_SECRET_ENV, KFP_SECRET_NAME


@dataclass
class ClusterConfig:
    """How charops pipeline tasks run on a Kubeflow cluster (read at compile time)."""

    stage: ClassVar[str] = "pipeline"

    store: str = field(default="", metadata={"help": "Default of the `store` parameter: artifact store URL the register step publishes to (s3://bucket/prefix?endpoint=..., or a directory; empty = charops default store)."})
    accelerator_type: str = field(default="nvidia.com/gpu", metadata={"help": "Default of `accelerator_type`: the resource name of the training steps' accelerator."})
    accelerator_limit: int = field(default=1, metadata={"help": "Default of `accelerator_limit`: accelerators per training step (0 = CPU only)."})
    node_selector: dict = field(default_factory=dict, metadata={"help": "Default of `node_selector`: node labels the training steps must run on."})
    tolerations: list = field(default_factory=list, metadata={"help": "Default of `tolerations`: Kubernetes toleration objects for the training steps (e.g. of GPU-node taints)."})
    s3_secret: str = field(default=KFP_SECRET_NAME, metadata={"help": "Default of `s3_secret`: Secret holding the object store credentials."})
    judge_secret: str = field(default="charops-judge", metadata={"help": "Default of `judge_secret`: Secret holding the LLM judge API key (optional: a missing Secret is not an error)."})
    model_cache_pvc: str = field(default="charops-model-cache", metadata={"help": "Default of `model_cache_pvc`: PersistentVolumeClaim mounted as the Hugging Face cache."})
    s3_secret_env: dict = field(default_factory=lambda: dict(KFP_SECRET_ENV), metadata={"help": "Secret key -> environment variable for the object store credentials."})
    judge_secret_env: dict = field(default_factory=lambda: {"api_key": "CHAROPS_JUDGE_API_KEY", "base_url": "CHAROPS_JUDGE_BASE_URL", "model": "CHAROPS_JUDGE_MODEL"}, metadata={"help": "Secret key -> environment variable for the LLM judge (charops.eval.llm reads these; every key optional)."})
    model_cache_enabled: bool = field(default=True, metadata={"help": "Mount `model_cache_pvc` into every step (false: no PVC, caches die with the pod)."})
    model_cache_mount_path: str = field(default="/home/charops/.cache", metadata={"help": "Where the model cache PVC is mounted: the charops image's cache folder (HF_HOME, torch extensions, charops' resolved models). No environment variable is set instead, because kfp.local would apply it on this machine too."})
    training_timeout_s: int = field(default=86400, metadata={"help": "Pod deadline of each training step, seconds (0 = none)."})
    step_timeout_s: int = field(default=7200, metadata={"help": "Pod deadline of the other steps, seconds (0 = none)."})
    retries: int = field(default=2, metadata={"help": "Retries of a failed step (transient failures: preempted node, store hiccup)."})
    retry_backoff: str = field(default="60s", metadata={"help": "Wait before the first retry."})
    retry_backoff_factor: float = field(default=2.0, metadata={"help": "Exponential factor applied to the wait between retries."})
    retry_backoff_max: str = field(default="1800s", metadata={"help": "Longest wait between retries."})
    cpu_request: str = field(default="2", metadata={"help": "CPU request of every step."})
    memory_request: str = field(default="8Gi", metadata={"help": "Memory request of the light steps."})
    training_memory_request: str = field(default="32Gi", metadata={"help": "Memory request of the training steps."})

    def validate(self) -> None:
        for name in ("training_timeout_s", "step_timeout_s", "retries", "accelerator_limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"pipeline cluster config: {name} must be >= 0")
        if not isinstance(self.tolerations, list) or not all(isinstance(t, dict) for t in self.tolerations):
            raise ConfigError("pipeline cluster config: tolerations must be a list of mappings "
                              "(key, operator, value, effect)")


def load_cluster_config(source: str | Path | None = "cluster",
                        overrides: list[str] | tuple[str, ...] = ()) -> ClusterConfig:
    """``configs/pipeline/cluster.yaml`` (or another preset/file) plus ``key=value`` overrides."""
    return load_config(ClusterConfig, source, overrides)


@dataclass
class Placement:
    """The run-time (pipeline parameter) side of the task settings, one pipeline's channels."""

    accelerator_type: Any
    accelerator_limit: Any
    node_selector: Any
    tolerations: Any
    s3_secret: Any
    judge_secret: Any
    model_cache_pvc: Any


def _common(task: dsl.PipelineTask, cluster: ClusterConfig, where: Placement,
            timeout_s: int, memory: str) -> dsl.PipelineTask:
    task.set_cpu_request(cluster.cpu_request).set_memory_request(memory)
    kubernetes.use_secret_as_env(task, secret_name=where.s3_secret,
                                 secret_key_to_env=dict(cluster.s3_secret_env))
    if cluster.model_cache_enabled:
        kubernetes.mount_pvc(task, pvc_name=where.model_cache_pvc,
                             mount_path=cluster.model_cache_mount_path)
    if timeout_s:
        kubernetes.set_timeout(task, timeout_s)
    if cluster.retries:
        task.set_retry(num_retries=cluster.retries, backoff_duration=cluster.retry_backoff,
                       backoff_factor=cluster.retry_backoff_factor,
                       backoff_max_duration=cluster.retry_backoff_max)
    return task


def _record_inputs(task: dsl.PipelineTask, *values: Any) -> None:
    """Record pipeline parameters a task's settings use as inputs of the task.

    kfp 2.17's ``set_accelerator_type`` / ``set_accelerator_limit`` put a parameter into the
    task's resources without recording it as an input, so the compiler does not pass it into an
    enclosing ``dsl.If`` / ``dsl.Else`` sub-DAG: a training step inside a condition (the
    evaluation's judge branches) then refers to a parameter its sub-DAG lacks (kfp.local:
    "Parent pipeline input argument 'pipelinechannel--accelerator_type' not found"). Recording
    it as the compiler does for ordinary inputs makes the sub-DAG receive it.
    """
    for value in values:
        # By identity: a channel's == builds a dsl.If condition, it does not compare.
        if isinstance(value, PipelineChannel) and all(value is not c for c in task.channel_inputs):
            task.channel_inputs.append(value)


def light_step(task: dsl.PipelineTask, cluster: ClusterConfig, where: Placement,
               name: str) -> dsl.PipelineTask:
    """A CPU step (base model, data prep, register): cacheable, retried, no accelerator."""
    task.set_display_name(name)
    return _common(task, cluster, where, cluster.step_timeout_s, cluster.memory_request)


def training_step(task: dsl.PipelineTask, cluster: ClusterConfig, where: Placement,
                  name: str, judge: bool = False) -> dsl.PipelineTask:
    """A training (or GPU evaluation) step: accelerators, placement, no caching.

    ``judge`` adds the LLM judge's key from ``judge_secret`` (evaluation steps).

    Caching is off because a training step's result depends on more than its inputs (seeds of
    data order on several GPUs, retried spot nodes): a rerun must retrain, not reuse.
    """
    task.set_display_name(name)
    task.set_caching_options(False)
    task.set_accelerator_type(where.accelerator_type)
    task.set_accelerator_limit(where.accelerator_limit)
    _record_inputs(task, where.accelerator_type, where.accelerator_limit)
    kubernetes.add_node_selector_json(task, where.node_selector)
    kubernetes.add_toleration_json(task, where.tolerations)
    if judge:
        kubernetes.use_secret_as_env(task, secret_name=where.judge_secret,
                                     secret_key_to_env=dict(cluster.judge_secret_env),
                                     optional=True)
    return _common(task, cluster, where, cluster.training_timeout_s,
                   cluster.training_memory_request)
