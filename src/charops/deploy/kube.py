"""A small Kubernetes API client: the few calls charops makes, with timeouts and bounded retries.

Configuration comes from the ``kubernetes`` package (installed with kfp): a kubeconfig file
(``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``; its current or a named context) or,
inside a pod, the service account's token and CA. Requests are made here rather than through
the generated API classes so that every call has the same timeout, retry and error policy, and
so that the calls charops makes are few and visible: each is ``Kube.<verb>(RESOURCE, ...)`` with
a module-level :class:`Resource`, which is what the RBAC test reads to check the Role grants
exactly these (``tests/unit/test_manifests.py``)::

    from charops.deploy.kube import INFERENCESERVICES, connect
    kube = connect(namespace="team-a")              # or context=..., kubeconfig=...
    isvc = kube.get(INFERENCESERVICES, "charops-chat", missing_ok=True)

Writes ask the server for strict field validation (``fieldValidation=Strict``): a field the
CRD does not know is an error, not silently pruned.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charops.errors import CharopsError

# Connect and read timeouts of every request, seconds.
DEFAULT_TIMEOUT = (5.0, 30.0)
# Attempts per request for transient failures (connection errors, timeouts, 429, 5xx).
DEFAULT_ATTEMPTS = 3
_RETRY_STATUS = {429, 500, 502, 503, 504}
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubeError(CharopsError):
    """The Kubernetes API cannot be reached, or refused a request (``status`` says how)."""

    def __init__(self, message: str, status: int | None = None, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Resource:
    """One kind of object charops touches, as the API addresses it (and RBAC names it)."""

    group: str  # "" for the core API
    version: str
    plural: str
    kind: str
    subresource: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def rbac_resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural

    def path(self, namespace: str, name: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
            if self.subresource:
                path += f"/{self.subresource}"
        return path


INFERENCESERVICES = Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
TRAINJOBS = Resource("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
PODS = Resource("", "v1", "pods", "Pod")
POD_LOGS = Resource("", "v1", "pods", "Pod", "log")

# Kube method -> the RBAC verb it needs (the RBAC test maps calls through this).
VERBS = {"get": "get", "list": "list", "create": "create", "patch": "patch", "delete": "delete",
         "log": "get"}


class Kube:
    """Namespaced requests through a configured ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: Any, namespace: str, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 attempts: int = DEFAULT_ATTEMPTS, backoff_s: float = 0.5, where: str = ""):
        self.api = api_client
        self.namespace = namespace
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.where = where or api_client.configuration.host

    def __repr__(self) -> str:
        return f"Kube({self.where}, namespace={self.namespace})"

    # -- the verbs ----------------------------------------------------------------------------

    def get(self, res: Resource, name: str, *, missing_ok: bool = False) -> dict | None:
        try:
            return self._request("GET", res.path(self.namespace, name))
        except KubeError as exc:
            if missing_ok and exc.status == 404:
                return None
            raise

    def list(self, res: Resource, *, label_selector: str = "") -> list[dict]:
        query = [("labelSelector", label_selector)] if label_selector else []
        return self._request("GET", res.path(self.namespace), query=query).get("items") or []

    def create(self, res: Resource, body: dict) -> dict:
        return self._request("POST", res.path(self.namespace), body=body,
                             query=[("fieldValidation", "Strict")])

    def patch(self, res: Resource, name: str, body: dict) -> dict:
        """A JSON merge patch (RFC 7386): ``None`` values delete keys, lists are replaced."""
        return self._request("PATCH", res.path(self.namespace, name), body=body,
                             query=[("fieldValidation", "Strict")],
                             content_type="application/merge-patch+json")

    def delete(self, res: Resource, name: str, *, missing_ok: bool = True) -> None:
        # Foreground: the call's effects (a TrainJob's JobSet and pods) go with it.
        try:
            self._request("DELETE", res.path(self.namespace, name),
                          body={"propagationPolicy": "Foreground"})
        except KubeError as exc:
            if not (missing_ok and exc.status == 404):
                raise

    def log(self, res: Resource, pod: str, *, container: str | None = None,
            since_seconds: int | None = None, tail_lines: int | None = None) -> str:
        assert res.subresource == "log", res
        query = [(k, str(v)) for k, v in (("container", container), ("sinceSeconds", since_seconds),
                                          ("tailLines", tail_lines)) if v is not None]
        return self._request("GET", res.path(self.namespace, pod), query=query, text=True)

    # -- plumbing -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, query: list | None = None, body: Any = None,
                 content_type: str = "application/json", text: bool = False) -> Any:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "text/plain" if text else "application/json",
                   "Content-Type": content_type}
        what = f"{method} {path}"
        for attempt in range(1, self.attempts + 1):
            try:
                resp = self.api.call_api(path, method, query_params=query or [],
                                         header_params=dict(headers), body=body,
                                         auth_settings=["BearerToken"], _preload_content=False,
                                         _return_http_data_only=True, _request_timeout=self.timeout)
                data = resp.data.decode("utf-8", errors="replace")
                return data if text else (json.loads(data) if data else {})
            except ApiException as exc:
                status, message, reason = exc.status, *_status_message(exc)
                if status in _RETRY_STATUS and attempt < self.attempts:
                    self._sleep(attempt)
                    continue
                hint = _HINTS.get(status, "")
                raise KubeError(f"Kubernetes API {self.where}: {what} -> {status} {message}{hint}",
                                status=status, reason=reason) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt < self.attempts:
                    self._sleep(attempt)
                    continue
                raise KubeError(f"Kubernetes API {self.where} unreachable: {what} failed "
                                f"{self.attempts} times ({type(exc).__name__}: {exc}); check the "
                                "kube context and the network") from None
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.backoff_s * 2 ** (attempt - 1))


_HINTS = {
    401: " (credentials rejected: refresh the kube context's token)",
    403: " (the service account lacks this permission: apply manifests/ (Role charops))",
}


def _status_message(exc: Any) -> tuple[str, str]:
    """The API server's Status message and reason, else the HTTP reason."""
    try:
        status = json.loads(exc.body)
        return status.get("message") or exc.reason, status.get("reason") or ""
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason), ""


def connect(namespace: str | None = None, *, context: str | None = None,
            kubeconfig: str | None = None, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS, backoff_s: float = 0.5) -> Kube:
    """A :class:`Kube` for the kube context (or the pod's service account when in a cluster).

    Namespace: ``namespace`` > the context's namespace > the pod's namespace > ``default``.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    # Retries are ours (bounded, on transient failures only), not urllib3's silent ones.
    cfg.retries = False
    # $KUBECONFIG may list several files (the kubernetes package merges them, as kubectl does).
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    found = any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p)
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not kubeconfig and not found
    ctx_namespace = None
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)
            if _SA_NAMESPACE.is_file():
                ctx_namespace = _SA_NAMESPACE.read_text().strip()
            where = f"in-cluster {cfg.host}"
        else:
            if not found:
                raise KubeError(f"no kube config at {path} and not inside a cluster: set "
                                "KUBECONFIG or pass --kubeconfig")
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                    persist_config=False)
            contexts, active = config.list_kube_config_contexts(config_file=path)
            chosen = next((c for c in contexts if c["name"] == context), active) if context else active
            ctx_namespace = (chosen or {}).get("context", {}).get("namespace")
            where = cfg.host
    except (ConfigException, ValueError, TypeError) as exc:
        raise KubeError(f"kube config {path}: {exc}") from None
    return Kube(client.ApiClient(cfg), namespace or ctx_namespace or "default", timeout=timeout,
                attempts=attempts, backoff_s=backoff_s, where=where)
