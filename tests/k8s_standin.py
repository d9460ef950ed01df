"""A STAND-IN for the Kubernetes API server, for tests only (no kube-apiserver can run here).

It is not Kubernetes: it keeps objects in a dict and answers the REST calls charops makes, the
way the real API server answers them, for the kinds charops uses:

* custom resources ``inferenceservices`` (serving.kserve.io/v1beta1) and ``trainjobs``
  (trainer.kubeflow.org/v1alpha1): create (POST), get, list (label selector), JSON merge
  patch (with ``resourceVersion`` preconditions -> 409), delete, and the ``/status``
  subresource (writes to the main resource leave ``status`` alone; ``generation`` counts spec
  changes). Every body is validated against the **upstream CRD schema** in ../shared/crds
  (jsonschema: types, enums, required, bounds -> 422 Invalid); with ``fieldValidation=Strict``
  (which charops sends) unknown fields are rejected (400) instead of silently pruned. CEL
  rules (``x-kubernetes-validations``) are not evaluated, nor are schema defaults applied.
* built-in ``serviceaccounts`` (create/get/patch, validated by kubernetes-validate, strict) and
  ``pods`` (list by label selector, ``/log``): pods are added by the test, standing in for the
  controllers that would create them.
* bearer-token auth (401 without it), 404/409 Status bodies like the real server's.

Controllers (KServe, Kubeflow Trainer) do not exist here: a test registers a function per kind
(``standin.controllers["InferenceService"] = fn``) that is called with the stored object
before every read, and sets ``status`` the way the controller would. Faults for the client's
retry and timeout handling: ``fail_next(n, status)`` and ``stall_next(n, seconds)``.
Every request is recorded in ``standin.calls`` as (verb, resource) pairs in RBAC terms.

    standin = KubeStandIn(CRD_DIR).start(); ...; standin.stop()
"""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jsonschema
import yaml

K8S_VERSION = "1.30.0"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --- schema checks shared with tests/unit/test_manifests.py -------------------------------

@functools.cache
def crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version of the CRDs in crd_dir."""
    schemas = {}
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        # libyaml when present: the InferenceService CRD alone is 40k lines.
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served"):
                schemas[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    return schemas


def unknown_fields(value, schema: dict, where: str = "") -> list[str]:
    """Paths of fields the structural schema does not declare (the API server would prune them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"):
        return []
    out = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if not where and key in ("apiVersion", "kind", "metadata"):
                continue
            path = f"{where}.{key}" if where else key
            if key not in schema["properties"]:
                out.append(path)
            else:
                out += unknown_fields(item, schema["properties"][key], path)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += unknown_fields(item, schema["items"], f"{where}[{i}]")
    return out


def schema_errors(doc: dict, schema: dict) -> list[str]:
    """jsonschema violations of doc against a CRD schema, as 'path: message' lines."""
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


# --- the stand-in -----------------------------------------------------------------------------

CUSTOM = {  # plural -> (group, version, kind)
    "inferenceservices": ("serving.kserve.io", "v1beta1", "InferenceService"),
    "trainjobs": ("trainer.kubeflow.org", "v1alpha1", "TrainJob"),
}
BUILTIN = {"serviceaccounts": "ServiceAccount", "pods": "Pod"}


class _Reply(Exception):
    def __init__(self, code: int, body: dict | str):
        self.code, self.body = code, body


def _status(code: int, reason: str, message: str) -> _Reply:
    return _Reply(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": message, "reason": reason, "code": code})


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class KubeStandIn:
    """The stand-in API server (see the module docstring). Binds 127.0.0.1 only."""

    def __init__(self, crd_dir: Path, token: str | None = None):
        self.crd_dir = Path(crd_dir)
        self.schemas = crd_schemas(self.crd_dir)
        self.token = token or uuid.uuid4().hex
        self.objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self.logs: dict[tuple[str, str], str] = {}  # (namespace, pod) -> log text
        self.controllers: dict[str, Callable[[dict], None]] = {}
        self.calls: list[tuple[str, str]] = []  # (RBAC verb, resource[/subresource])
        self.requests: list[dict] = []  # method, path, query, body (for assertions)
        self._faults: list[tuple[str, float]] = []
        self._rv = 0
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> KubeStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _handle(self):
                standin._serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: Path, namespace: str = "charops-test") -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "tester",
                                                         "namespace": namespace}}],
        }))
        return path

    # -- test-side helpers --------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 503) -> None:
        """The next n requests answer `status` (a Status body) without doing anything."""
        self._faults += [("fail", status)] * n

    def stall_next(self, n: int, seconds: float) -> None:
        """The next n requests wait `seconds` before answering (for client read timeouts)."""
        self._faults += [("stall", seconds)] * n

    def obj(self, plural: str, name: str, namespace: str = "charops-test") -> dict | None:
        with self._lock:
            found = self.objects.get((plural, namespace, name))
            return copy.deepcopy(found) if found else None

    def set_status(self, plural: str, name: str, status: dict, namespace: str = "charops-test") -> None:
        with self._lock:
            o = self.objects[(plural, namespace, name)]
            self._check_status(plural, o, status)
            o["status"] = status
            self._bump(o)

    def add_pod(self, name: str, labels: dict, log: str = "", namespace: str = "charops-test") -> None:
        with self._lock:
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": namespace, "labels": labels},
                   "spec": {"containers": [{"name": "node", "image": "charops"}]},
                   "status": {"phase": "Running"}}
            self._meta(pod)
            self.objects[("pods", namespace, name)] = pod
            self.logs[(namespace, name)] = log

    def append_log(self, pod: str, text: str, namespace: str = "charops-test") -> None:
        with self._lock:
            self.logs[(namespace, pod)] = self.logs.get((namespace, pod), "") + text

    # -- the server -----------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            if self._faults:
                kind, arg = self._faults.pop(0)
                if kind == "stall":
                    time.sleep(arg)
                else:
                    raise _status(int(arg), "ServiceUnavailable", "injected fault")
            if h.headers.get("Authorization") != f"Bearer {self.token}":
                raise _status(401, "Unauthorized", "Unauthorized")
            body = json.loads(raw) if raw else None
            with self._lock:
                self.requests.append({"method": h.command, "path": url.path, "query": query,
                                      "body": body, "content_type": h.headers.get("Content-Type")})
                code, out = self._route(h.command, url.path, query, body,
                                        h.headers.get("Content-Type", ""))
        except _Reply as reply:
            code, out = reply.code, reply.body
        except json.JSONDecodeError as exc:
            code, out = 400, _status(400, "BadRequest", f"invalid JSON body: {exc}").body
        data = out.encode() if isinstance(out, str) else json.dumps(out).encode()
        try:
            h.send_response(code)
            h.send_header("Content-Type", "text/plain" if isinstance(out, str) else "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            pass

    def _route(self, method: str, path: str, query: dict, body, content_type: str):
        m = re.fullmatch(r"/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?(?:/([^/]+))?", path) \
            or re.fullmatch(r"/api/(v1)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?(?:/([^/]+))?", path)
        if not m:
            raise _status(404, "NotFound", f"the server could not find the requested resource ({path})")
        if path.startswith("/apis/"):
            group, version, ns, plural, name, sub = m.groups()
            if CUSTOM.get(plural, (None, None))[:2] != (group, version):
                raise _status(404, "NotFound", f"the server could not find the requested resource ({path})")
        else:
            version, ns, plural, name, sub = m.groups()
            if plural not in BUILTIN:
                raise _status(404, "NotFound", f"resource {plural} not served by the stand-in")
        verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete"}[method]
        self.calls.append((verb, f"{plural}/{sub}" if sub else plural))
        if method == "GET" and not name:
            return 200, self._list(plural, ns, query.get("labelSelector", ""))
        if method == "POST" and not name:
            return 201, self._create(plural, ns, body, query)
        if name is None:
            raise _status(405, "MethodNotAllowed", f"{method} on a collection")
        key = (plural, ns, name)
        if sub == "log":
            if key not in self.objects:
                raise _status(404, "NotFound", f'pods "{name}" not found')
            text = self.logs.get((ns, name), "")
            if query.get("tailLines"):
                text = "".join(text.splitlines(keepends=True)[-int(query["tailLines"]):])
            return 200, text
        if key not in self.objects:
            raise _status(404, "NotFound", f'{plural}.{CUSTOM.get(plural, ("",))[0] or "core"} "{name}" not found'.replace(".core", ""))
        if method == "GET":
            self._run_controller(key)
            return 200, copy.deepcopy(self.objects[key])
        if method == "DELETE":
            obj = self.objects.pop(key)
            if plural == "trainjobs":  # garbage collection of the JobSet's pods
                for k in [k for k, o in self.objects.items() if k[0] == "pods" and k[1] == ns and
                          o["metadata"].get("labels", {}).get("jobset.sigs.k8s.io/jobset-name") == name]:
                    del self.objects[k]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                         "details": {"name": name, "kind": plural, "uid": obj["metadata"]["uid"]}}
        if method == "PATCH":
            if "merge-patch" not in content_type:
                raise _status(415, "UnsupportedMediaType", f"the stand-in only takes merge patches, not {content_type}")
            return 200, self._patch(key, body, query, status_only=sub == "status")
        raise _status(405, "MethodNotAllowed", f"{method} is not served by the stand-in")

    def _list(self, plural: str, ns: str, selector: str) -> dict:
        want = dict(part.split("=", 1) for part in selector.split(",") if part)
        items = []
        for (p, n, _), o in sorted(self.objects.items()):
            labels = o["metadata"].get("labels", {})
            if p == plural and n == ns and all(labels.get(k) == v for k, v in want.items()):
                items.append(copy.deepcopy(o))
        return {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._rv)},
                "items": items}

    def _create(self, plural: str, ns: str, body, query: dict) -> dict:
        if not isinstance(body, dict):
            raise _status(400, "BadRequest", "the body must be an object")
        name = (body.get("metadata") or {}).get("name", "")
        if body.get("metadata", {}).get("namespace", ns) != ns:
            raise _status(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        if not _NAME_RE.match(name) or len(name) > 63:
            raise _status(422, "Invalid", f"metadata.name '{name}': a lowercase RFC 1123 label is required")
        if (plural, ns, name) in self.objects:
            raise _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
        obj = copy.deepcopy(body)
        obj.pop("status", None)  # status is the controller's (subresource)
        obj["metadata"]["namespace"] = ns
        self._validate(plural, obj, query)
        self._meta(obj)
        obj["metadata"]["generation"] = 1
        self.objects[(plural, ns, name)] = obj
        self._run_controller((plural, ns, name))
        return copy.deepcopy(self.objects[(plural, ns, name)])

    def _patch(self, key, body, query: dict, status_only: bool) -> dict:
        if not isinstance(body, dict):
            raise _status(400, "BadRequest", "a merge patch must be an object")
        current = self.objects[key]
        want_rv = (body.get("metadata") or {}).get("resourceVersion")
        if want_rv is not None and want_rv != current["metadata"]["resourceVersion"]:
            raise _status(409, "Conflict", f'Operation cannot be fulfilled on {key[0]} "{key[2]}": the object has been modified; please apply your changes to the latest version and try again')
        if status_only:
            new = dict(current, status=merge_patch(current.get("status", {}), body.get("status", {})))
            self._check_status(key[0], new, new["status"])
        else:
            patch = {k: v for k, v in body.items() if k != "status"}
            new = merge_patch(current, patch)
            for fixed in ("name", "namespace", "uid", "creationTimestamp"):
                new["metadata"][fixed] = current["metadata"][fixed]
            self._validate(key[0], new, query)
            if new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self._bump(new)
        self.objects[key] = new
        self._run_controller(key)
        return copy.deepcopy(self.objects[key])

    # -- validation -----------------------------------------------------------------------------

    def _validate(self, plural: str, obj: dict, query: dict) -> None:
        kind = CUSTOM[plural][2] if plural in CUSTOM else BUILTIN[plural]
        if obj.get("kind") != kind or (plural in CUSTOM and obj.get("apiVersion") != "/".join(CUSTOM[plural][:2])):
            raise _status(400, "BadRequest", f"expected {kind}, got {obj.get('apiVersion')} {obj.get('kind')}")
        name = obj["metadata"].get("name")
        if plural in BUILTIN:
            import kubernetes_validate

            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise _status(422, "Invalid", f'{kind} "{name}" is invalid: {exc.message}') from None
            return
        schema = self.schemas[("/".join(CUSTOM[plural][:2]), kind)]
        unknown = unknown_fields(obj, schema)
        if unknown and query.get("fieldValidation") == "Strict":
            raise _status(400, "BadRequest", "strict decoding error: " +
                          ", ".join(f'unknown field "{u}"' for u in unknown))
        errors = schema_errors(obj, schema)
        if errors:
            raise _status(422, "Invalid", f'{kind}.{CUSTOM[plural][0]} "{name}" is invalid: ' + "; ".join(errors))

    def _check_status(self, plural: str, obj: dict, status: dict) -> None:
        """Status written by a test's controller must fit the CRD too (a wrong fake is a bug)."""
        if plural not in CUSTOM:
            return
        schema = self.schemas[("/".join(CUSTOM[plural][:2]), CUSTOM[plural][2])]
        errors = schema_errors(status, schema["properties"]["status"])
        if errors:
            raise AssertionError(f"stand-in controller wrote an invalid {plural} status: {errors}")

    # -- bookkeeping ----------------------------------------------------------------------------

    def _meta(self, obj: dict) -> None:
        obj["metadata"].update(uid=str(uuid.uuid4()),
                               creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self._bump(obj)

    def _bump(self, obj: dict) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def _run_controller(self, key) -> None:
        fn = self.controllers.get(self.objects[key].get("kind"))
        if fn is not None:
            obj = self.objects[key]
            before = copy.deepcopy(obj.get("status"))
            fn(obj)
            if obj.get("status") != before:
                self._check_status(key[0], obj, obj["status"])
                self._bump(obj)
