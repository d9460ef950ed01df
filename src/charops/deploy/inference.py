"""InferenceService manifests for a registered model: KServe's huggingface runtime, vLLM backend.

A registry entry (``charops.registry``) becomes a predictor that downloads the model directory
from ``storageUri: s3://...`` (KServe's storage initializer, with the credentials and
``serving.kserve.io/s3-*`` annotations of the predictor's ServiceAccount), asks for
``gpus`` accelerators, and serves it under the service's name with OpenAI-compatible routes.
The characters travel inside the model directory (``characters.jsonl``); their names are
also written on the service (annotation ``charops.io/characters``) so a client can list them.

With the vLLM backend the server reuses the KV cache of shared prompt prefixes
(``--enable-prefix-caching``, ``prefix_caching``): every request of a character starts with the
same rendered profile. Versions trained with LoRA keep their adapter next to the merged weights
(``<model dir>/adapter``); :func:`render_lora` serves such versions as adapters on one base
model (vLLM ``--enable-lora``): one InferenceService per base, one OpenAI model id per adapter
(``NAME-vVERSION``), instead of one merged model (and one GPU) each.

Canary rollouts follow the deployment mode, because the two modes do it differently:

* Standard (``RawDeployment``): ``spec.predictor`` keeps serving the stable version and
  ``spec.canary[]`` carries the candidate with its ``trafficPercent``.
* Serverless (Knative): ``spec.predictor`` is the candidate with
  ``canaryTrafficPercent``; Knative keeps the last rolled-out revision for the rest.
  Standard mode ignores ``canaryTrafficPercent`` silently, so it is never rendered there.

::

    from charops.deploy.inference import DeployConfig, render
    from charops.config import load_config
    cfg = load_config(DeployConfig, "gpu")                # configs/deploy/gpu.yaml
    sa, isvc = render(entry, cfg, s3_endpoint="minio-service.kubeflow:9000", s3_secure=False,
                      characters=["林小满"])
    sa, isvc = render_lora("s3://charops/base/smollm2", [(entry_v3, ["林小满"]), (entry_v4, ["Mara"])],
                           cfg, service="charops-chat-lora", s3_endpoint=..., s3_secure=False)
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from charops.errors import ConfigError

ISVC_API = "serving.kserve.io/v1beta1"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODES = {"standard": "RawDeployment", "serverless": "Serverless"}
# Annotations and labels charops owns on the objects it applies (others' are left alone).
OWNED_PREFIX = "charops.io/"
PART_OF = {"app.kubernetes.io/part-of": "charops", "app.kubernetes.io/managed-by": "charops"}


@dataclass
class DeployConfig:
    """How ``charops deploy`` serves a registered model on the cluster."""

    stage: ClassVar[str] = "deploy"

    service: str = field(default="", metadata={"help": "InferenceService name (empty = the model's registry name)."})
    mode: str = field(default="standard", metadata={"help": "KServe deployment mode: standard (RawDeployment: Deployments, no Knative) or serverless (Knative)."})
    service_account: str = field(default="charops-serving", metadata={"help": "ServiceAccount of the predictor pods; charops deploy creates/patches it to carry the S3 secret and KServe's s3 annotations."})
    s3_secret: str = field(default="charops-store", metadata={"help": "Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY that KServe's storage initializer uses (manifests/examples/secrets.example.yaml)."})
    s3_endpoint: str = field(default="", metadata={"help": "S3 endpoint host:port as the cluster sees it (empty = the store's endpoint; a loopback endpoint is refused)."})
    s3_usehttps: bool | None = field(default=None, metadata={"help": "Whether the storage initializer uses HTTPS (empty = as the store does)."})
    runtime: str = field(default="", metadata={"help": "ServingRuntime name (empty = KServe picks the huggingface runtime by model format)."})
    backend: str = field(default="vllm", metadata={"help": "Backend of KServe's huggingface server: vllm (GPU) or huggingface (transformers, CPU)."})
    gpus: int = field(default=1, metadata={"help": "Accelerators per replica (0 = CPU); > 1 shards the model with vLLM tensor parallelism."})
    accelerator_type: str = field(default="nvidia.com/gpu", metadata={"help": "Resource name of the accelerator."})
    cpu_request: str = field(default="4", metadata={"help": "CPU request per replica."})
    cpu_limit: str = field(default="8", metadata={"help": "CPU limit per replica."})
    memory_request: str = field(default="24Gi", metadata={"help": "Memory request per replica."})
    memory_limit: str = field(default="32Gi", metadata={"help": "Memory limit per replica."})
    max_model_len: int = field(default=4096, metadata={"help": "Longest context (prompt + reply) in tokens the server accepts."})
    dtype: str = field(default="bfloat16", metadata={"help": "Weights dtype on the server (bfloat16 on GPUs, float32 on CPU)."})
    min_replicas: int = field(default=1, metadata={"help": "Fewest replicas (LLMs load slowly: keep >= 1)."})
    max_replicas: int = field(default=1, metadata={"help": "Most replicas."})
    node_selector: dict = field(default_factory=dict, metadata={"help": "Node labels the predictor pods must run on."})
    tolerations: list = field(default_factory=list, metadata={"help": "Tolerations of the predictor pods (e.g. of GPU-node taints)."})
    prefix_caching: bool = field(default=True, metadata={"help": "vLLM: reuse the KV cache of shared prompt prefixes (every request of a character starts with its profile)."})
    lora_versions: list = field(default_factory=list, metadata={"help": "Serve these registry versions of the model (trained with LoRA) as adapters on one base instead of one merged model: e.g. lora_versions=[3,4]."})
    lora_base_uri: str = field(default="", metadata={"help": "With lora_versions: the S3 directory of the base model the adapters were trained on."})
    max_loras: int = field(default=4, metadata={"help": "vLLM LoRA serving: adapters resident on the GPU at once."})
    max_lora_rank: int = field(default=64, metadata={"help": "vLLM LoRA serving: largest adapter rank (charops trains r=16 by default)."})
    extra_args: list = field(default_factory=list, metadata={"help": "More arguments for the huggingface server (e.g. --gpu-memory-utilization=0.9)."})
    ready_timeout_s: int = field(default=1800, metadata={"help": "How long to wait for the service to become Ready, seconds."})
    poll_s: float = field(default=5.0, metadata={"help": "Seconds between status reads while waiting."})

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"deploy config: mode '{self.mode}' is not one of {', '.join(MODES)}")
        if self.backend not in ("vllm", "huggingface"):
            raise ConfigError(f"deploy config: backend '{self.backend}' is not vllm or huggingface")
        for name in ("gpus", "min_replicas", "max_replicas", "ready_timeout_s", "max_loras", "max_lora_rank"):
            if getattr(self, name) < 0:
                raise ConfigError(f"deploy config: {name} must be >= 0")
        if self.max_replicas < self.min_replicas:
            raise ConfigError("deploy config: max_replicas must be >= min_replicas")
        if self.lora_versions and not self.lora_base_uri:
            raise ConfigError("deploy config: lora_versions needs lora_base_uri (the base model's s3:// directory)")
        if self.poll_s <= 0:
            raise ConfigError("deploy config: poll_s must be > 0")


def check_s3_endpoint(endpoint: str) -> str:
    """``host:port`` as the cluster must reach it; loopback would point pods at themselves."""
    host = endpoint.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        raise ConfigError(f"S3 endpoint '{endpoint}' is this machine's loopback address, which "
                          "predictor pods cannot reach: pass s3_endpoint=HOST:PORT as the cluster "
                          "sees the store (e.g. minio-service.kubeflow:9000)")
    return endpoint.split("://")[-1]


def predictor(entry: dict, cfg: DeployConfig, service: str) -> dict:
    """The predictor spec serving one registry entry."""
    uri = entry["model_uri"]
    if not str(uri).startswith("s3://"):
        raise ConfigError(f"model '{entry['name']}' v{entry['version']} lives at '{uri}', not in an "
                          "S3 store the cluster can read: register it with CHAROPS_STORE=s3://... "
                          "(see docs/cluster.md)")
    args = [f"--model_name={service}", f"--backend={cfg.backend}", f"--dtype={cfg.dtype}",
            f"--max_model_len={cfg.max_model_len}"]
    if cfg.backend == "vllm" and cfg.gpus > 1:
        args.append(f"--tensor-parallel-size={cfg.gpus}")
    if cfg.backend == "vllm" and cfg.prefix_caching:
        args.append("--enable-prefix-caching")
    requests = {"cpu": cfg.cpu_request, "memory": cfg.memory_request}
    limits = {"cpu": cfg.cpu_limit, "memory": cfg.memory_limit}
    if cfg.gpus:
        requests[cfg.accelerator_type] = limits[cfg.accelerator_type] = str(cfg.gpus)
    # "kserve-container" is KServe's own container name; spec.canary[] requires it spelled out.
    model: dict[str, Any] = {"name": "kserve-container", "modelFormat": {"name": "huggingface"},
                             "storageUri": uri,
                             "args": args + [str(a) for a in cfg.extra_args],
                             "resources": {"requests": requests, "limits": limits}}
    if cfg.runtime:
        model["runtime"] = cfg.runtime
    spec: dict[str, Any] = {"serviceAccountName": cfg.service_account,
                            "minReplicas": cfg.min_replicas, "maxReplicas": cfg.max_replicas,
                            # Pod labels say which registry version a pod serves.
                            "labels": {"charops.io/model": entry["name"],
                                       "charops.io/version": str(entry["version"])},
                            "model": model}
    if cfg.node_selector:
        spec["nodeSelector"] = dict(cfg.node_selector)
    if cfg.tolerations:
        spec["tolerations"] = list(cfg.tolerations)
    return spec


def service_account(cfg, s3_endpoint: str, s3_secure: bool) -> dict:
    """The ServiceAccount the predictor runs as: KServe's S3 annotations and the S3 Secret."""
    endpoint = check_s3_endpoint(cfg.s3_endpoint or s3_endpoint)
    https = s3_secure if cfg.s3_usehttps is None else cfg.s3_usehttps
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": cfg.service_account, "labels": dict(PART_OF),
                         "annotations": {"serving.kserve.io/s3-endpoint": endpoint,
                                         "serving.kserve.io/s3-usehttps": "1" if https else "0"}},
            "secrets": [{"name": cfg.s3_secret}]}


def render(entry: dict, cfg: DeployConfig, *, s3_endpoint: str, s3_secure: bool,
           characters: list[str], stable: dict | None = None,
           canary_percent: int | None = None) -> tuple[dict, dict]:
    """(ServiceAccount, InferenceService) serving ``entry``.

    With ``canary_percent``, ``entry`` is the candidate that gets that share of the traffic and
    ``stable`` the registry entry that keeps the rest (Standard mode renders both; Serverless
    renders the candidate, Knative keeping the previous revision).
    """
    service = cfg.service or entry["name"]
    sa = service_account(cfg, s3_endpoint, s3_secure)
    annotations = {MODE_ANNOTATION: MODES[cfg.mode],
                   "charops.io/characters": json.dumps(sorted(characters), ensure_ascii=False)}
    labels = {**PART_OF, "charops.io/model": entry["name"]}
    if canary_percent is None:
        spec: dict[str, Any] = {"predictor": predictor(entry, cfg, service)}
        annotations["charops.io/version"] = str(entry["version"])
    else:
        if not 0 <= canary_percent <= 100:
            raise ConfigError(f"--canary {canary_percent}: a traffic percentage is 0-100")
        if stable is None:
            raise ConfigError(f"--canary: model '{entry['name']}' has no production version to "
                              "keep serving the rest of the traffic; deploy one without --canary first")
        if int(stable["version"]) == int(entry["version"]):
            raise ConfigError(f"--canary: v{entry['version']} is already the production version; "
                              "name the candidate with --version")
        annotations["charops.io/version"] = str(stable["version"])
        annotations["charops.io/canary-version"] = str(entry["version"])
        annotations["charops.io/canary-percent"] = str(canary_percent)
        if cfg.mode == "standard":
            spec = {"predictor": predictor(stable, cfg, service),
                    "canary": [{"predictor": predictor(entry, cfg, service),
                                "trafficPercent": canary_percent}]}
        else:
            spec = {"predictor": {**predictor(entry, cfg, service),
                                  "canaryTrafficPercent": canary_percent}}
    isvc = {"apiVersion": ISVC_API, "kind": "InferenceService",
            "metadata": {"name": service, "labels": labels, "annotations": annotations},
            "spec": spec}
    return sa, isvc


ADAPTER_DIR = "adapter"  # where training keeps a LoRA version's adapter inside its model directory
BASE_MOUNT = "/mnt/models"
ADAPTER_MOUNT = "/mnt/adapters"


def adapter_name(entry: dict) -> str:
    """The OpenAI model id of a registry version served as an adapter: ``NAME-vVERSION``."""
    return f"{entry['name']}-v{int(entry['version'])}"


def render_lora(base_uri: str, adapters: list[tuple[dict, list[str]]], cfg: DeployConfig, *,
                service: str, s3_endpoint: str, s3_secure: bool) -> tuple[dict, dict]:
    """(ServiceAccount, InferenceService) serving LoRA registry versions as adapters on one base.

    ``base_uri`` is the S3 directory of the base model the adapters were trained on;
    ``adapters`` pairs each registry entry (a LoRA version: ``<model_uri>/adapter``) with its
    characters. KServe's storage initializer fetches the base to ``/mnt/models`` and each adapter
    to ``/mnt/adapters/NAME-vVERSION`` (``spec.predictor.storageUris``); vLLM serves each as the
    model id ``NAME-vVERSION``. The characters of every adapter are on the service
    (annotation ``charops.io/adapters``).
    """
    if cfg.backend != "vllm":
        raise ConfigError("LoRA adapters on one base need the vllm backend (backend=vllm)")
    if not adapters:
        raise ConfigError("render_lora: no adapter versions to serve")
    uris = [base_uri] + [e["model_uri"] for e, _ in adapters]
    for uri in uris:
        if not str(uri).startswith("s3://"):
            raise ConfigError(f"'{uri}' is not in an S3 store the cluster can read (see docs/cluster.md)")
    names = [adapter_name(e) for e, _ in adapters]
    if len(set(names)) != len(names):
        raise ConfigError(f"render_lora: a version is listed twice ({', '.join(names)})")
    sa = service_account(cfg, s3_endpoint, s3_secure)
    # A plain predictor for the base, then: no single storageUri but one per directory, and
    # vLLM's LoRA arguments naming each adapter's mount.
    base_entry = {"name": service, "version": 0, "model_uri": base_uri}
    spec = predictor(base_entry, cfg, service)
    model = spec["model"]
    model.pop("storageUri")
    model["args"] = [f"--model_dir={BASE_MOUNT}", *model["args"], "--enable-lora",
                     f"--max-loras={max(1, min(cfg.max_loras, len(adapters)))}",
                     f"--max-lora-rank={cfg.max_lora_rank}", "--lora-modules",
                     *(f"{n}={ADAPTER_MOUNT}/{n}" for n in names)]
    spec["storageUris"] = [{"uri": base_uri, "mountPath": BASE_MOUNT}] + [
        {"uri": f"{str(e['model_uri']).rstrip('/')}/{ADAPTER_DIR}", "mountPath": f"{ADAPTER_MOUNT}/{n}"}
        for (e, _), n in zip(adapters, names, strict=True)]
    spec["labels"] = {"charops.io/model": service, "charops.io/version": "lora"}
    served = {n: {"model": e["name"], "version": int(e["version"]), "characters": sorted(chars)}
              for (e, chars), n in zip(adapters, names, strict=True)}
    isvc = {"apiVersion": ISVC_API, "kind": "InferenceService",
            "metadata": {"name": service, "labels": {**PART_OF, "charops.io/model": service},
                         "annotations": {MODE_ANNOTATION: MODES[cfg.mode],
                                         "charops.io/base-model": base_uri,
                                         "charops.io/adapters": json.dumps(served, ensure_ascii=False,
                                                                          sort_keys=True)}},
            "spec": {"predictor": spec}}
    return sa, isvc


def merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new`` (None deletes a key)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    patch = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_diff(old[key], value)
    return patch


def patch_for(live: dict, desired: dict) -> dict:
    """A merge patch from ``live`` to ``desired``: the whole spec, charops' labels/annotations.

    Others' annotations (KServe's, a person's) stay; charops' own that the new state lacks go
    (a finished canary's ``charops.io/canary-*``). ``resourceVersion`` makes it conditional:
    someone else's change in between is a 409, not a silent overwrite.
    """
    meta = live.get("metadata", {})
    patch: dict[str, Any] = {"metadata": {"resourceVersion": meta.get("resourceVersion")}}
    for part in ("labels", "annotations"):
        have, want = meta.get(part) or {}, desired["metadata"].get(part) or {}
        changes = {k: v for k, v in want.items() if have.get(k) != v}
        changes.update({k: None for k in have if k.startswith(OWNED_PREFIX) and k not in want})
        if changes:
            patch["metadata"][part] = changes
    for key in set(desired) - {"apiVersion", "kind", "metadata"}:
        diff = merge_diff(live.get(key), desired[key])
        if diff != {}:
            patch[key] = diff
    return patch
