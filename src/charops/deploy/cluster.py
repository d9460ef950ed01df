"""Serve a registered model on the cluster: ``charops deploy NAME`` / ``charops rollback NAME``.

``plan`` picks the registry entry (the production version, a ``--version``, or the newest in a
stage), reads its characters from the store, and renders the ServiceAccount and
InferenceService (``charops.deploy.inference``); ``apply`` creates them or patches them in place
(a conditional merge patch, so a concurrent change is a conflict, not lost); ``wait_ready``
polls the service until KServe reports it Ready (and the canary with it), fails fast on a
model that cannot load, and returns the URL::

    from charops.deploy import cluster
    from charops.deploy.kube import connect
    kube = connect()
    p = cluster.plan(store, "charops-chat", cfg, version=5, canary=10)
    print(cluster.manifests_yaml(p))                 # --dry-run
    cluster.apply(kube, p); url = cluster.wait_ready(kube, p, on_status=print)

``rollback`` makes the previous production version production again in the registry
(``charops.registry.rollback``) and patches the service to serve it.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from charops.deploy.inference import ADAPTER_DIR, DeployConfig, patch_for, render, render_lora
from charops.deploy.kube import INFERENCESERVICES, SERVICEACCOUNTS, Kube, KubeError
from charops.errors import CharopsError


class DeployError(CharopsError):
    """The model cannot be served as asked, or the service did not become Ready."""


@dataclass
class Plan:
    """What a deploy will apply, and why."""

    entry: dict  # the version that takes (part of) the traffic
    stable: dict | None  # with a canary: the version that keeps the rest
    canary: int | None
    service_account: dict
    inference_service: dict

    @property
    def name(self) -> str:
        return self.inference_service["metadata"]["name"]


def select_entry(store, name: str, *, version: int | str | None = None,
                 stage: str = "production") -> dict:
    """The registry entry to serve: ``version`` if given, else the newest one in ``stage``."""
    from charops import registry

    if version is not None:
        return registry.get_entry(store, name, version)
    if stage == "production":
        entry = registry.production(store, name)
        if entry is None:
            raise DeployError(f"model '{name}' has no production version: promote one "
                              f"(charops promote {name} VERSION --to production) or pass --version")
        return entry
    found = registry.version_in(store, name, stage)
    if found is None:
        raise DeployError(f"model '{name}' has no version in stage '{stage}'")
    return registry.get_entry(store, name, found)


def characters_of(store, entry: dict) -> list[str]:
    """Names of the characters in the model directory's ``characters.jsonl`` (they travel with it)."""
    from charops.registry import model_prefix

    key = f"{model_prefix(entry['name'], int(entry['version']))}/characters.jsonl"
    if not store.exists(key):
        raise DeployError(f"model '{entry['name']}' v{entry['version']} has no characters.jsonl "
                          f"in its model directory ({store.url_for(key)}): retrain or re-register "
                          "it with a dataset that has character profiles")
    with tempfile.TemporaryDirectory(prefix="charops-deploy-") as tmp:
        path = Path(tmp) / "characters.jsonl"
        store.get_file(key, path)
        names = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    names.append(json.loads(line)["name"])
                except (ValueError, KeyError, TypeError):
                    raise DeployError(f"{store.url_for(key)} line {i}: not a character profile "
                                      "with a 'name'") from None
    return names


def plan(store, name: str, cfg: DeployConfig, *, version: int | str | None = None,
         stage: str = "production", canary: int | None = None) -> Plan:
    """Render what ``charops deploy`` applies (no cluster needed: ``--dry-run`` prints this)."""
    from charops import registry

    if cfg.lora_versions:
        if canary is not None:
            raise DeployError("--canary with lora_versions: adapters share one service; list the versions instead")
        return plan_lora(store, name, cfg)
    entry = select_entry(store, name, version=version, stage=stage)
    stable = registry.production(store, name) if canary is not None else None
    endpoint = getattr(store, "endpoint", "")
    if not endpoint and not cfg.s3_endpoint:
        raise DeployError(f"the registry store {store.url} is not S3: the cluster cannot read its "
                          "models; use CHAROPS_STORE=s3://... (docs/cluster.md)")
    sa, isvc = render(entry, cfg, s3_endpoint=endpoint, s3_secure=bool(getattr(store, "secure", False)),
                      characters=characters_of(store, entry), stable=stable, canary_percent=canary)
    return Plan(entry, stable, canary, sa, isvc)


def plan_lora(store, name: str, cfg: DeployConfig) -> Plan:
    """``cfg.lora_versions`` of ``name`` as LoRA adapters on ``cfg.lora_base_uri``: one service
    (``cfg.service`` or ``NAME-lora``), each version's ``model/adapter`` checked in the store."""
    from charops import registry
    from charops.registry import model_prefix

    endpoint = getattr(store, "endpoint", "")
    if not endpoint and not cfg.s3_endpoint:
        raise DeployError(f"the registry store {store.url} is not S3: the cluster cannot read its "
                          "models; use CHAROPS_STORE=s3://... (docs/cluster.md)")
    adapters = []
    for v in cfg.lora_versions:
        entry = registry.get_entry(store, name, v)
        key = f"{model_prefix(entry['name'], int(entry['version']))}/{ADAPTER_DIR}/adapter_config.json"
        if not store.exists(key):
            raise DeployError(f"model '{name}' v{entry['version']} has no LoRA adapter ({store.url_for(key)}): "
                              "it was trained without lora.enabled=true; deploy it as a merged model instead")
        adapters.append((entry, characters_of(store, entry)))
    sa, isvc = render_lora(cfg.lora_base_uri, adapters, cfg, service=cfg.service or f"{name}-lora",
                           s3_endpoint=endpoint, s3_secure=bool(getattr(store, "secure", False)))
    return Plan(adapters[-1][0], None, None, sa, isvc)


def manifests_yaml(p: Plan) -> str:
    return yaml.safe_dump_all([p.service_account, p.inference_service], sort_keys=False,
                              allow_unicode=True)


def apply(kube: Kube, p: Plan, attempts: int = 3) -> str:
    """Create or patch the ServiceAccount and the InferenceService; "created" or "patched"."""
    # Each call names its resource (the RBAC test reads them from this source).
    sa = p.service_account
    _apply_one(sa, lambda: kube.get(SERVICEACCOUNTS, sa["metadata"]["name"], missing_ok=True),
               lambda: kube.create(SERVICEACCOUNTS, sa),
               lambda patch: kube.patch(SERVICEACCOUNTS, sa["metadata"]["name"], patch), attempts)
    isvc = p.inference_service
    return _apply_one(isvc, lambda: kube.get(INFERENCESERVICES, p.name, missing_ok=True),
                      lambda: kube.create(INFERENCESERVICES, isvc),
                      lambda patch: kube.patch(INFERENCESERVICES, p.name, patch), attempts)


def _apply_one(desired: dict, get: Callable[[], dict | None], create: Callable[[], dict],
               patch: Callable[[dict], dict], attempts: int) -> str:
    for attempt in range(1, attempts + 1):
        live = get()
        try:
            if live is None:
                create()
                return "created"
            patch(patch_for(live, desired))
            return "patched"
        except KubeError as exc:
            # 409: created meanwhile, or changed since our read: read again and redo.
            if exc.status == 409 and attempt < attempts:
                continue
            raise
    raise AssertionError("unreachable")


def _conditions(status: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in status.get("conditions") or []}


def _failure(status: dict) -> str | None:
    """Why the model can never become Ready as specified, or None while it still may."""
    statuses = [("", status.get("modelStatus") or {})]
    statuses += [(f"canary {c.get('name', '')} ", c.get("modelStatus") or {})
                 for c in status.get("canaryStatuses") or []]
    for who, ms in statuses:
        info = ms.get("lastFailureInfo") or {}
        if ms.get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec") or \
                (ms.get("states") or {}).get("activeModelState") == "FailedToLoad":
            return (f"{who}model {ms.get('transitionStatus') or 'FailedToLoad'}: "
                    f"{info.get('reason', '')} {info.get('message', '')}").strip()
    return None


def describe_status(isvc: dict) -> str:
    """One line of live status: Ready and why not, the model's state, canary readiness."""
    status = isvc.get("status") or {}
    conds = _conditions(status)
    ready = conds.get("Ready", {})
    parts = [f"Ready={ready.get('status', 'Unknown')}"]
    waiting = [f"{t}: {c.get('reason') or c.get('message') or c.get('status')}"
               for t, c in conds.items() if t != "Ready" and c.get("status") != "True"]
    if waiting:
        parts.append("(" + "; ".join(waiting) + ")")
    state = ((status.get("modelStatus") or {}).get("states") or {}).get("activeModelState")
    if state:
        parts.append(f"model={state}")
    for c in status.get("canaryStatuses") or []:
        parts.append(f"canary {c.get('name')}: ready={c.get('ready')} traffic={c.get('trafficPercent')}%")
    return " ".join(parts)


def is_ready(isvc: dict) -> bool:
    """Ready for the current spec: the Ready condition, observed at this generation, canary too."""
    status = isvc.get("status") or {}
    if _conditions(status).get("Ready", {}).get("status") != "True":
        return False
    observed = status.get("observedGeneration")
    if observed is not None and observed < isvc["metadata"].get("generation", 0):
        return False  # the controller has not looked at our change yet
    if isvc["spec"].get("canary") and not all(c.get("ready") for c in status.get("canaryStatuses") or [{}]):
        return False
    return True


def wait_ready(kube: Kube, p: Plan, *, timeout_s: float, poll_s: float,
               on_status: Callable[[str], None] | None = None,
               clock: Callable[[], float] = time.monotonic) -> str:
    """Poll until the service is Ready; its URL. Fails on a load failure or at ``timeout_s``."""
    deadline = clock() + timeout_s
    last = None
    while True:
        isvc = kube.get(INFERENCESERVICES, p.name)
        line = describe_status(isvc)
        if on_status is not None and line != last:
            on_status(line)
        last = line
        failure = _failure(isvc.get("status") or {})
        if failure:
            raise DeployError(f"InferenceService {kube.namespace}/{p.name} failed: {failure}")
        if is_ready(isvc):
            status = isvc["status"]
            url = status.get("url") or (status.get("address") or {}).get("url")
            if not url:
                raise DeployError(f"InferenceService {kube.namespace}/{p.name} is Ready but has no URL")
            return url
        if clock() >= deadline:
            raise DeployError(f"InferenceService {kube.namespace}/{p.name} not Ready after "
                              f"{timeout_s:g} s; last status: {line} (kubectl describe "
                              f"inferenceservice {p.name} -n {kube.namespace})")
        time.sleep(poll_s)


def deploy(kube: Kube, p: Plan, cfg: DeployConfig,
           on_status: Callable[[str], None] | None = None) -> dict:
    """Apply the plan and wait for it; a summary (what was done, URL, versions, traffic)."""
    action = apply(kube, p)
    url = wait_ready(kube, p, timeout_s=cfg.ready_timeout_s, poll_s=cfg.poll_s, on_status=on_status)
    return {"service": p.name, "namespace": kube.namespace, "action": action, "url": url,
            "openai_base_url": url.rstrip("/") + "/openai/v1",
            "version": int((p.stable or p.entry)["version"]),
            "canary_version": int(p.entry["version"]) if p.canary is not None else None,
            "canary_percent": p.canary, "mode": cfg.mode}


def rollback(kube: Kube, store, name: str, cfg: DeployConfig, *, reason: str,
             on_status: Callable[[str], None] | None = None) -> dict:
    """Previous production version back to production in the registry, then on the service."""
    from charops import registry

    entry = registry.rollback(store, name, actor=registry.current_actor(), reason=reason)
    p = plan(store, name, cfg, version=entry["version"])
    try:
        result = deploy(kube, p, cfg, on_status=on_status)
    except CharopsError as exc:
        raise DeployError(f"the registry now has v{entry['version']} of '{name}' in production, "
                          f"but the service was not updated ({exc}); rerun `charops deploy {name}`") from None
    return {**result, "rolled_back_to": int(entry["version"])}
