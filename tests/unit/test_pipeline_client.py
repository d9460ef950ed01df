"""charops.pipeline.client against a stand-in for the Kubeflow Pipelines API server.

    .venv/bin/python -m pytest tests/unit/test_pipeline_client.py -x -q

``FakeKfpServer`` is NOT Kubeflow: it is a small HTTP server on 127.0.0.1 that answers exactly
the KFP v2beta1 REST paths kfp.Client (kfp 2.17 / kfp_server_api) calls for our operations —
healthz, experiments (list with filter, create), pipelines (list with filter, upload,
upload_version), pipeline versions (list with filter), runs (create, get, list) — with run
states advancing on each poll. It records every request so the tests can check what the
client sent (uploads, typed parameters, Authorization header).
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from charops.errors import CharopsError
from charops.pipeline.client import connect, resolve_host
from charops.pipeline.version import compute_version, stamp

API = "/apis/v2beta1"
NOW = "2026-11-28T10:00:00Z"


class FakeKfpServer:
    """In-memory state + request log of the stand-in API server."""

    def __init__(self, token: str | None = None, fail_runs_named: str = "fail"):
        self.token = token
        self.fail_runs_named = fail_runs_named
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.runs: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.handle(self, "GET")

            def do_POST(self):
                server.handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- plumbing ----------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        body, files = None, {}
        ctype = h.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            msg = email.message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw,
                                           policy=email.policy.HTTP)
            for part in msg.iter_parts():
                files[part.get_param("name", header="content-disposition")] = part.get_payload(decode=True)
        elif raw:
            body = json.loads(raw)
        self.requests.append({"method": method, "path": url.path, "query": query, "body": body,
                              "files": files, "auth": h.headers.get("Authorization")})
        if self.token and h.headers.get("Authorization") != f"Bearer {self.token}":
            return self.reply(h, 401, {"error": "unauthenticated", "code": 16, "message": "bad token"})
        try:
            status, payload = self.route(method, url.path, query, body, files)
        except KeyError as exc:
            status, payload = 404, {"code": 5, "message": f"not found: {exc}"}
        self.reply(h, status, payload)

    @staticmethod
    def reply(h, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def matches(items, query):
        """Apply a v2beta1 Filter (EQUALS on display_name) as the API server does."""
        if "filter" not in query:
            return list(items)
        preds = json.loads(query["filter"])["predicates"]
        out = list(items)
        for p in preds:
            assert p["operation"] in ("EQUALS", 1), p
            out = [i for i in out if i.get(p["key"]) == p["stringValue"]]
        return out

    # -- the API -------------------------------------------------------------------------

    def route(self, method, path, query, body, files):
        parts = path.removeprefix(API).strip("/").split("/")
        if (method, parts) == ("GET", ["healthz"]):
            return 200, {"multi_user": False, "pipeline_store": "database"}
        if parts[0] == "experiments":
            if method == "GET" and len(parts) == 1:
                found = self.matches(self.experiments.values(), query)
                return 200, {"experiments": found, "total_size": len(found)}
            if method == "POST":
                exp = {"experiment_id": uuid.uuid4().hex, "display_name": body["display_name"],
                       "namespace": body.get("namespace") or "", "created_at": NOW}
                self.experiments[exp["experiment_id"]] = exp
                return 200, exp
            if method == "GET":
                return 200, self.experiments[parts[1]]
        if parts[0] == "pipelines":
            if method == "GET" and len(parts) == 1:
                found = self.matches(self.pipelines.values(), query)
                return 200, {"pipelines": found, "total_size": len(found)}
            if (method, parts[1:]) == ("POST", ["upload"]):
                spec = list(yaml.safe_load_all(files["uploadfile"]))
                p = {"pipeline_id": uuid.uuid4().hex, "display_name": query["name"],
                     "name": query["name"], "description": query.get("description", ""),
                     "created_at": NOW}
                self.pipelines[p["pipeline_id"]] = p
                # Like the real server, an upload also creates a first version named after it.
                self.versions[p["pipeline_id"]] = [self.new_version(p["pipeline_id"], query["name"], spec)]
                return 200, p
            if (method, parts[1:]) == ("POST", ["upload_version"]):
                pid = query["pipelineid"]
                self.pipelines[pid]  # 404 for an unknown pipeline
                v = self.new_version(pid, query["name"], list(yaml.safe_load_all(files["uploadfile"])))
                self.versions[pid].append(v)
                return 200, v
            if method == "GET" and len(parts) == 3 and parts[2] == "versions":
                found = self.matches(self.versions[parts[1]], query)
                return 200, {"pipeline_versions": found, "total_size": len(found)}
        if parts[0] == "runs":
            if method == "POST":
                run = dict(body, run_id=uuid.uuid4().hex, state="PENDING", created_at=NOW)
                self.runs[run["run_id"]] = run
                return 200, run
            if method == "GET" and len(parts) == 1:
                runs = [r for r in self.runs.values()
                        if "experiment_id" not in query or r["experiment_id"] == query["experiment_id"]]
                return 200, {"runs": runs, "total_size": len(runs)}
            if method == "GET":
                run = self.runs[parts[1]]
                n = self.polls[run["run_id"]] = self.polls.get(run["run_id"], 0) + 1
                # PENDING on the first poll, RUNNING on the next two, then the outcome.
                if n >= 4:
                    failed = self.fail_runs_named in run["display_name"]
                    run["state"] = "FAILED" if failed else "SUCCEEDED"
                    run["finished_at"] = NOW
                    if failed:
                        run["error"] = {"code": 2, "message": "task train failed"}
                elif n >= 2:
                    run["state"] = "RUNNING"
                return 200, run
        return 404, {"code": 5, "message": f"no route {method} {path}"}

    def new_version(self, pid, name, spec):
        return {"pipeline_id": pid, "pipeline_version_id": uuid.uuid4().hex, "display_name": name,
                "name": name, "created_at": NOW, "pipeline_spec": spec[0]}

    def posted(self, suffix: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == API + suffix]


@pytest.fixture
def server():
    fake = FakeKfpServer()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture
def yamls(tiny_pipeline_yaml, tmp_path):
    out = {}
    for key, src in tiny_pipeline_yaml.items():
        path = tmp_path / f"{key}.yaml"
        path.write_text(stamp(src.read_text()))
        out[key] = path
    return out


def test_first_submit_uploads_pipeline_and_version_then_nothing(server, yamls):
    kfp = connect(host=server.url, env={})
    params = {"required_text": "hi", "a": 7, "b": 0.25, "flag": False, "items": [1, "x"],
              "cfg": {"lr": 0.1}}
    ref = kfp.submit_run(yamls["base"], params, experiment="exp1", run_name="r1")
    version = compute_version(yamls["base"].read_text())
    assert ref.uploaded == ["pipeline", "version"] and ref.version == version
    assert len(server.posted("/pipelines/upload")) == 1
    (upv,) = server.posted("/pipelines/upload_version")
    assert upv["query"]["name"] == version and upv["query"]["pipelineid"] == ref.pipeline_id
    # The uploaded file is the stamped YAML itself.
    assert upv["files"]["uploadfile"].decode() == yamls["base"].read_text()
    (run,) = server.posted("/runs")
    assert run["body"]["display_name"] == "r1"
    assert run["body"]["pipeline_version_reference"] == {"pipeline_id": ref.pipeline_id,
                                                         "pipeline_version_id": ref.version_id}
    sent = run["body"]["runtime_config"]["parameters"]
    assert sent == params
    assert type(sent["a"]) is int and type(sent["b"]) is float and type(sent["flag"]) is bool
    assert ref.url == f"{server.url}/#/runs/details/{ref.run_id}"
    assert len(server.posted("/experiments")) == 1

    before = len(server.requests)
    ref2 = kfp.submit_run(yamls["base"], {"required_text": "x"}, experiment="exp1")
    assert ref2.uploaded == [] and ref2.version_id == ref.version_id
    new = server.requests[before:]
    assert not [r for r in new if "/upload" in r["path"]]
    assert not [r for r in new if r["method"] == "POST" and r["path"].endswith("/experiments")]
    assert len(server.posted("/runs")) == 2


def test_changed_yaml_uploads_only_a_new_version(server, yamls):
    kfp = connect(host=server.url, env={})
    first = kfp.submit_run(yamls["base"], {"required_text": "a"})
    second = kfp.submit_run(yamls["variant"], {"required_text": "a"})
    assert second.uploaded == ["version"]
    assert second.pipeline_id == first.pipeline_id and second.version_id != first.version_id
    assert len(server.posted("/pipelines/upload")) == 1
    assert [r["query"]["name"] for r in server.posted("/pipelines/upload_version")] == \
        [first.version, second.version]


def test_wait_follows_states_to_success_and_failure(server, yamls):
    kfp = connect(host=server.url, env={})
    ok = kfp.submit_run(yamls["base"], {"required_text": "a"}, run_name="good")
    seen = []
    final = kfp.wait_run(ok.run_id, timeout=30, on_status=seen.append, poll_s=0.01)
    assert [s.state for s in seen] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert final.exit_code == 0 and final.finished_at

    bad = kfp.submit_run(yamls["base"], {"required_text": "a"}, run_name="will fail")
    final = kfp.wait_run(bad.run_id, timeout=30, poll_s=0.01)
    assert final.state == "FAILED" and final.exit_code == 1 and final.error == "task train failed"

    runs = kfp.list_runs()
    assert {r.run_id for r in runs} == {ok.run_id, bad.run_id}
    assert kfp.get_run(ok.run_id).state == "SUCCEEDED"


def test_wait_timeout_is_an_error(server, yamls):
    kfp = connect(host=server.url, env={})
    ref = kfp.submit_run(yamls["base"], {"required_text": "a"})
    with pytest.raises(CharopsError, match=r"still (PENDING|RUNNING) after 0 s"):
        kfp.wait_run(ref.run_id, timeout=0, poll_s=0.01)


def test_token_is_sent_as_bearer_and_a_bad_one_is_a_clear_error(yamls):
    fake = FakeKfpServer(token="s3cret")
    fake.thread.start()
    try:
        kfp = connect(host=fake.url, env={"KF_PIPELINES_TOKEN": "s3cret"})
        kfp.submit_run(yamls["base"], {"required_text": "a"})
        assert fake.requests and all(r["auth"] == "Bearer s3cret" for r in fake.requests)
        with pytest.raises(CharopsError) as exc:
            connect(host=fake.url, token="wrong", env={})
        assert "refused healthz (HTTP 401): pass --token or set KF_PIPELINES_TOKEN" in str(exc.value)
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()


def test_unreachable_endpoint_is_a_one_line_error():
    from conftest import _free_ports

    port = _free_ports(1)[0]
    with pytest.raises(CharopsError) as exc:
        connect(host=f"http://127.0.0.1:{port}", env={})
    assert str(exc.value) == f"cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}: connection refused"


def test_host_resolution(tmp_path):
    assert resolve_host("http://h:1/", {}) == "http://h:1"
    assert resolve_host(None, {"KF_PIPELINES_ENDPOINT": "h:2"}) == "http://h:2"
    assert resolve_host("http://x", {"KF_PIPELINES_ENDPOINT": "h:2"}) == "http://x"
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\n")
    assert resolve_host(None, {"KUBECONFIG": str(kubeconfig)}) is None  # kfp uses the context
    assert resolve_host(None, {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOME": str(tmp_path)}) is None
    with pytest.raises(CharopsError, match="pass --host .* or set KF_PIPELINES_ENDPOINT"):
        resolve_host(None, {"HOME": str(tmp_path)})


def test_bad_inputs_fail_before_anything_is_uploaded(server, yamls, tiny_pipeline_yaml):
    kfp = connect(host=server.url, env={})
    with pytest.raises(CharopsError, match="has no parameter 'nope'"):
        kfp.submit_run(yamls["base"], {"nope": 1})
    with pytest.raises(CharopsError, match="no charops pipeline version stamp"):
        kfp.submit_run(tiny_pipeline_yaml["base"], {})
    edited = yamls["base"].with_name("edited.yaml")
    edited.write_text(yamls["base"].read_text().replace("defaultValue: 3.0", "defaultValue: 9.0"))
    with pytest.raises(CharopsError, match="does not match its content"):
        kfp.submit_run(edited, {})
    assert not [r for r in server.requests if r["method"] == "POST"]
    with pytest.raises(CharopsError, match="no run 'missing'"):
        kfp.get_run("missing")
    with pytest.raises(CharopsError, match="no experiment 'nope'"):
        kfp.list_runs(experiment="nope")


# --- charops runs ---------------------------------------------------------------------------

def test_cli_runs_list_get_wait(server, yamls):
    from typer.testing import CliRunner

    from charops.cli.main import app

    kfp = connect(host=server.url, env={})
    good = kfp.submit_run(yamls["base"], {"required_text": "a"}, run_name="good")
    bad = kfp.submit_run(yamls["base"], {"required_text": "a"}, run_name="will fail")
    runner = CliRunner()
    host = ["--host", server.url]

    result = runner.invoke(app, ["runs", "list", *host, "--json"])
    assert result.exit_code == 0, result.output
    assert {r["run_id"] for r in json.loads(result.stdout)} == {good.run_id, bad.run_id}

    result = runner.invoke(app, ["runs", "wait", good.run_id, "--poll", "0.01", *host])
    assert result.exit_code == 0, result.output
    states = [line.split()[-1] for line in result.stdout.splitlines()[:-1]]
    assert states == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert result.stdout.splitlines()[-1] == f"run {good.run_id} SUCCEEDED: {good.url}"

    result = runner.invoke(app, ["runs", "wait", bad.run_id, "--poll", "0.01", *host])
    assert result.exit_code == 1 and "FAILED  task train failed" in result.stdout

    result = runner.invoke(app, ["runs", "get", bad.run_id, *host, "--json"])
    assert json.loads(result.stdout)["state"] == "FAILED"

    result = runner.invoke(app, ["runs", "get", "nope", *host])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: no run 'nope' on {server.url}"
