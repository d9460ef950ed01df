"""Kubeflow Pipelines cluster operations: versioned upload, runs, status, waiting.

A thin layer over ``kfp.Client`` (KFP v2beta1 API) that ``charops submit`` and ``charops runs``
use. Each compiled pipeline YAML carries its version (``charops.pipeline.version``); a submit
uploads the pipeline only if the server lacks it and that version only if the server lacks it::

    from charops.pipeline.client import connect
    kfp = connect(host="http://localhost:8080", token=None)      # or KF_PIPELINES_ENDPOINT
    ref = kfp.submit_run("pipelines/full.yaml", {"sft_overrides": ["max_steps=20"]}, experiment="charops")
    print(ref.url)
    final = kfp.wait_run(ref.run_id, timeout=3600, on_status=lambda s: print(s.state))

Host: ``host`` argument (``--host``) > ``$KF_PIPELINES_ENDPOINT`` > the kube context (in-cluster
config or kubeconfig, which kfp resolves itself). Token: ``token`` (``--token``) >
``$KF_PIPELINES_TOKEN``, sent as ``Authorization: Bearer``. The health check before anything
else waits seconds, not minutes: ``$CHAROPS_KFP_CONNECT_TIMEOUT`` (default 5) and
``$CHAROPS_KFP_READ_TIMEOUT`` (default 10); a refused connection is tried once more, a server
that accepts and never answers is not (waiting again would only double the wait).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import kfp
import kfp_server_api
import urllib3

from charops.errors import CharopsError
from charops.pipeline.spec import load_spec
from charops.pipeline.version import compute_version

SUCCESS_STATES = {"SUCCEEDED", "SKIPPED"}
FAILURE_STATES = {"FAILED", "ERROR", "CANCELED"}
TERMINAL_STATES = SUCCESS_STATES | FAILURE_STATES


class KfpError(CharopsError):
    """The Kubeflow Pipelines API server cannot be reached or refused a request."""


DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT = 5.0, 10.0


def _timeout(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise KfpError(f"{name}={raw!r}: expected a number of seconds above 0")
    return value


@dataclass(frozen=True)
class RunRef:
    """A submitted run and what the submit had to upload to get there."""

    run_id: str
    run_name: str
    url: str
    experiment_id: str
    pipeline_id: str
    version_id: str
    version: str
    uploaded: list[str] = field(default_factory=list)  # "pipeline", "version"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunStatus:
    """The state of one run, as the CLI shows it."""

    run_id: str
    name: str
    state: str
    url: str
    experiment_id: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def exit_code(self) -> int:
        """0 when the run succeeded, 1 when it failed, errored or was canceled, 3 if not done."""
        if self.state in SUCCESS_STATES:
            return 0
        return 1 if self.state in FAILURE_STATES else 3

    def to_dict(self) -> dict:
        return asdict(self)


def _equals_filter(value: str) -> str:
    # The v2beta1 Filter proto as JSON; kfp's own helpers send the EQUALS operation this way.
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                       "stringValue": value}]})


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else (value or None)


def resolve_host(host: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The API endpoint to use, or None to let kfp use the kube context; error if there is none."""
    env = os.environ if env is None else env
    host = host or env.get("KF_PIPELINES_ENDPOINT")
    if host:
        host = host.rstrip("/")
        return host if "://" in host else f"http://{host}"
    kubeconfig = env.get("KUBECONFIG") or str(Path(env.get("HOME", "~")).expanduser() / ".kube/config")
    if env.get("KUBERNETES_SERVICE_HOST") or any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p):
        return None
    raise KfpError("no Kubeflow Pipelines endpoint: pass --host (e.g. http://localhost:8080 after "
                   "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`) or set "
                   "KF_PIPELINES_ENDPOINT")


def checked_params(yaml_path: str | os.PathLike, params: Mapping[str, Any] | None) -> tuple[Any, dict]:
    """(spec, params) of a compiled pipeline, refusing a parameter it does not have."""
    spec = load_spec(yaml_path)
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec.parameters))
    if unknown:
        raise KfpError(f"{spec.path}: pipeline '{spec.name}' has no parameter '{unknown[0]}' "
                       f"(parameters: {', '.join(sorted(spec.parameters)) or 'none'})")
    return spec, params


class KfpClient:
    """One connection to a KFP API server (use :func:`connect`)."""

    def __init__(self, host: str | None, token: str | None = None, namespace: str | None = None,
                 ui_host: str | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 read_timeout: float = DEFAULT_READ_TIMEOUT):
        self.host = host
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.where = host or "the kube context's cluster"
        self.namespace = namespace or None
        self.ui_host = (ui_host or host or "").rstrip("/")
        if host:
            self._healthz(host, token)
        with self._api("healthz"), warnings.catch_warnings():
            # kfp warns that it needs KFP >= 2.0.0-beta.2 on every construction.
            warnings.simplefilter("ignore", FutureWarning)
            # The constructor calls healthz itself (single-user check) through the kube
            # context when host is None.
            self.client = kfp.Client(host=host, existing_token=token or None,
                                     namespace=namespace or "kubeflow", ui_host=ui_host)

    def _healthz(self, host: str, token: str | None) -> None:
        """One quick healthz call before kfp.Client, whose own check retries for 25 s on an
        auth error and logs a traceback each time."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Read timeouts are not retried: a server that accepted and said nothing would only
        # make the user wait twice as long.
        http = urllib3.PoolManager(retries=urllib3.Retry(total=1, read=0, backoff_factor=0.2),
                                   timeout=urllib3.Timeout(connect=self.connect_timeout,
                                                           read=self.read_timeout))
        url = f"{host}/apis/v2beta1/healthz"
        with self._api("healthz"):
            try:
                response = http.request("GET", url, headers=headers)
            except urllib3.exceptions.MaxRetryError as exc:
                if isinstance(exc.reason, urllib3.exceptions.ReadTimeoutError):
                    raise KfpError(f"Kubeflow Pipelines at {host} did not answer healthz within "
                                   f"{self.read_timeout:g} s (raise CHAROPS_KFP_READ_TIMEOUT if it is "
                                   "only slow)") from None
                if isinstance(exc.reason, urllib3.exceptions.NewConnectionError):
                    raise
                if isinstance(exc.reason, urllib3.exceptions.ConnectTimeoutError):
                    raise KfpError(f"cannot reach Kubeflow Pipelines at {host}: no connection within "
                                   f"{self.connect_timeout:g} s (CHAROPS_KFP_CONNECT_TIMEOUT)") from None
                raise
        if response.status in (401, 403):
            raise KfpError(f"Kubeflow Pipelines at {self.where} refused healthz (HTTP "
                           f"{response.status}): pass --token or set KF_PIPELINES_TOKEN")
        if response.status != 200:
            raise KfpError(f"{url} answered HTTP {response.status}: is {host} the Kubeflow "
                           "Pipelines API endpoint (the ml-pipeline-ui service, port 80)?")
        # A web page or a proxy's login form also answers 200; the API answers JSON.
        try:
            body = json.loads(response.data)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            ctype = response.headers.get("Content-Type", "").split(";")[0] or "no content type"
            raise KfpError(f"{url} answered HTTP 200 with {ctype}, not JSON: {host} is not the Kubeflow "
                           "Pipelines API (use the ml-pipeline-ui service, port 80, or the API server)")

    # -- errors --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _api(self, what: str) -> Iterator[None]:
        """Map what kfp raises to one-line errors; keep kfp's own prints off our stdout."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        except urllib3.exceptions.MaxRetryError as exc:
            reason = exc.reason
            detail = "connection refused" if "refused" in str(reason).lower() else \
                " ".join(str(reason).split())[:160]
            raise KfpError(f"cannot reach Kubeflow Pipelines at {self.where}: {detail}") from None
        except kfp_server_api.ApiException as exc:
            if exc.status in (401, 403):
                raise KfpError(f"Kubeflow Pipelines at {self.where} refused {what} (HTTP "
                               f"{exc.status}): pass --token or set KF_PIPELINES_TOKEN") from None
            if exc.status == 0:  # kfp's wrapper for TLS failures
                raise KfpError(f"cannot reach Kubeflow Pipelines at {self.where}: {exc.reason}") from None
            message = exc.reason
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                body = json.loads(exc.body)
                message = body.get("message") or body.get("error") or message
            raise KfpError(f"Kubeflow Pipelines at {self.where}: {what} failed (HTTP {exc.status}: "
                           f"{' '.join(str(message).split())[:300]})") from None
        except TimeoutError:  # get_kfp_healthz gives up after 5 failed attempts
            raise KfpError(f"Kubeflow Pipelines at {self.where} is not healthy ({what} kept "
                           "failing)") from None

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_host or '/pipeline'}/#/runs/details/{run_id}"

    # -- pipelines -----------------------------------------------------------------------

    def find_pipeline(self, name: str) -> str | None:
        with self._api(f"listing pipelines named '{name}'"):
            result = self.client.list_pipelines(filter=_equals_filter(name), page_size=10,
                                                namespace=self.namespace)
        found = [p for p in result.pipelines or [] if p.display_name == name]
        if len(found) > 1:
            raise KfpError(f"{len(found)} pipelines named '{name}' on {self.where}; delete the "
                           "duplicates in the Kubeflow UI")
        return found[0].pipeline_id if found else None

    def find_version(self, pipeline_id: str, version: str) -> str | None:
        with self._api(f"listing versions of pipeline {pipeline_id}"):
            result = self.client.list_pipeline_versions(pipeline_id, filter=_equals_filter(version),
                                                        page_size=10)
        found = [v for v in result.pipeline_versions or [] if version in (v.display_name, v.name)]
        return found[0].pipeline_version_id if found else None

    def ensure_version(self, yaml_path: str | os.PathLike) -> tuple[str, str, str, list[str]]:
        """Pipeline id, version id and version of a compiled YAML, uploading what is missing."""
        spec = load_spec(yaml_path)
        if spec.version is None:
            raise KfpError(f"{spec.path}: no charops pipeline version stamp; compile it with "
                           "`charops compile` (or stamp it with charops.pipeline.version.stamp)")
        actual = compute_version(spec.text, str(spec.path))
        if actual != spec.version:
            raise KfpError(f"{spec.path}: stamped version {spec.version} does not match its "
                           f"content ({actual}); recompile it with `charops compile`")
        uploaded: list[str] = []
        pipeline_id = self.find_pipeline(spec.name)
        if pipeline_id is None:
            with self._api(f"uploading pipeline '{spec.name}'"):
                pipeline = self.client.upload_pipeline(str(spec.path), pipeline_name=spec.name,
                                                       description=spec.description or None,
                                                       namespace=self.namespace)
            pipeline_id = pipeline.pipeline_id
            uploaded.append("pipeline")
        version_id = self.find_version(pipeline_id, spec.version)
        if version_id is None:
            with self._api(f"uploading version {spec.version} of '{spec.name}'"):
                version = self.client.upload_pipeline_version(
                    str(spec.path), pipeline_version_name=spec.version, pipeline_id=pipeline_id,
                    description=f"charops {spec.version}: {spec.description}".strip(": "))
            version_id = version.pipeline_version_id
            uploaded.append("version")
        return pipeline_id, version_id, spec.version, uploaded

    # -- experiments and runs ------------------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        with self._api(f"listing experiments named '{name}'"):
            result = self.client.list_experiments(filter=_equals_filter(name), page_size=10,
                                                  namespace=self.namespace)
        for experiment in result.experiments or []:
            if experiment.display_name == name:
                return experiment.experiment_id
        with self._api(f"creating experiment '{name}'"):
            return self.client.create_experiment(name, namespace=self.namespace).experiment_id

    def submit_run(self, yaml_path: str | os.PathLike, params: Mapping[str, Any] | None = None,
                   experiment: str = "charops", run_name: str | None = None,
                   service_account: str | None = None) -> RunRef:
        """Upload what the server lacks, then start a run of this exact pipeline version."""
        spec, params = checked_params(yaml_path, params)
        pipeline_id, version_id, version, uploaded = self.ensure_version(yaml_path)
        experiment_id = self.ensure_experiment(experiment)
        run_name = run_name or f"{spec.name} {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}"
        with self._api(f"creating run '{run_name}'"):
            run = self.client.run_pipeline(experiment_id=experiment_id, job_name=run_name,
                                           params=params, pipeline_id=pipeline_id,
                                           version_id=version_id, service_account=service_account)
        return RunRef(run_id=run.run_id, run_name=run_name, url=self.run_url(run.run_id),
                      experiment_id=experiment_id, pipeline_id=pipeline_id,
                      version_id=version_id, version=version, uploaded=uploaded)

    def _status(self, run: Any) -> RunStatus:
        error = None
        if run.error is not None:
            error = run.error.message or str(run.error.code)
        return RunStatus(run_id=run.run_id, name=run.display_name or "", state=str(run.state or "RUNTIME_STATE_UNSPECIFIED"),
                         url=self.run_url(run.run_id), experiment_id=run.experiment_id,
                         created_at=_iso(run.created_at), finished_at=_iso(run.finished_at),
                         error=error)

    def get_run(self, run_id: str) -> RunStatus:
        try:
            with self._api(f"getting run {run_id}"):
                return self._status(self.client.get_run(run_id))
        except KfpError as exc:
            if "HTTP 404" in str(exc):
                raise KfpError(f"no run '{run_id}' on {self.where}") from None
            raise

    def list_runs(self, experiment: str | None = None, limit: int = 20) -> list[RunStatus]:
        """Newest runs first, optionally of one experiment (by name)."""
        experiment_id = None
        if experiment:
            with self._api(f"listing experiments named '{experiment}'"):
                result = self.client.list_experiments(filter=_equals_filter(experiment),
                                                      namespace=self.namespace)
            found = [e for e in result.experiments or [] if e.display_name == experiment]
            if not found:
                raise KfpError(f"no experiment '{experiment}' on {self.where}")
            experiment_id = found[0].experiment_id
        with self._api("listing runs"):
            result = self.client.list_runs(page_size=limit, sort_by="created_at desc",
                                           experiment_id=experiment_id, namespace=self.namespace)
        return [self._status(r) for r in result.runs or []]

    def wait_run(self, run_id: str, timeout: float | None = None,
                 on_status: Callable[[RunStatus], None] | None = None,
                 poll_s: float = 5.0) -> RunStatus:
        """Poll until the run finishes; ``on_status`` sees every change of state.

        Returns the final status (``.exit_code`` is non-zero for FAILED/ERROR/CANCELED);
        running past ``timeout`` seconds is an error.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            status = self.get_run(run_id)
            if status.state != last and on_status is not None:
                on_status(status)
            last = status.state
            if status.done:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise KfpError(f"run {run_id} still {status.state} after {timeout:g} s; follow "
                               f"it at {status.url} or `charops runs wait {run_id}`")
            time.sleep(poll_s)


def connect(host: str | None = None, token: str | None = None, namespace: str | None = None,
            env: Mapping[str, str] | None = None) -> KfpClient:
    """A checked connection: host and token resolved as the module docstring says."""
    env = os.environ if env is None else env
    return KfpClient(resolve_host(host, env), token=token or env.get("KF_PIPELINES_TOKEN"),
                     namespace=namespace, ui_host=env.get("KF_PIPELINES_UI_ENDPOINT"),
                     connect_timeout=_timeout(env, "CHAROPS_KFP_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
                     read_timeout=_timeout(env, "CHAROPS_KFP_READ_TIMEOUT", DEFAULT_READ_TIMEOUT))
