"""Nothing hangs and nothing prints a traceback against a wrong or stuck server (issue 7).

The servers here are tiny stand-ins on 127.0.0.1, not S3 or Kubeflow: one accepts TCP
connections and never answers; one answers every request with HTTP 200 and an HTML page
(a web console or a proxy's login page where an API was expected). The real S3 server
(SeaweedFS, tests/conftest.py) checks that the new probe still accepts a true S3 API.

    .venv/bin/python -m pytest tests/unit/test_network_errors.py -x -q
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import assert_one_line_error

from charops.storage import S3Store, StorageError, open_store

# A subprocess that hangs longer than this fails the test (a bound, not a timing assertion).
HANG_LIMIT_S = 90


class _Url(str):
    """The server's URL; ``held`` lists the connections it has accepted."""

    held: list


@pytest.fixture
def silent_server():
    """Accepts connections on 127.0.0.1 and never sends a byte: yields its http:// URL."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)  # keep it open, say nothing
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    url = _Url(f"http://127.0.0.1:{srv.getsockname()[1]}")
    url.held = held
    yield url
    stop.set()
    t.join(timeout=5)
    for c in held:
        c.close()
    srv.close()


PAGE = b"<!DOCTYPE html><html><head><title>Console</title></head><body><p>Welcome</p></body></html>"


@pytest.fixture
def html_server():
    """Answers every GET/HEAD/POST/PUT with 200 and an HTML page: yields its http:// URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _page(self, body: bool = True):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            if body:
                self.wfile.write(PAGE)

        def do_GET(self):
            self._page()

        def do_POST(self):
            self._page()

        def do_PUT(self):
            self._page()

        def do_HEAD(self):
            self._page(body=False)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _charops(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """The real `charops` command in a subprocess, killed if it hangs."""
    full = {**os.environ, "HOME": "/nonexistent", "OMP_NUM_THREADS": "1", **env}
    full.pop("CHAROPS_STORE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "charops.cli.main", *args], env=full,
                          capture_output=True, text=True, timeout=HANG_LIMIT_S)


def _s3_env(url: str, **extra: str) -> dict[str, str]:
    return {"CHAROPS_STORE": "s3://some-bucket", "CHAROPS_S3_ENDPOINT": url,
            "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", **extra}


# --- S3 --------------------------------------------------------------------------------------

def test_s3_endpoint_that_never_answers_fails_with_the_endpoint_named(silent_server):
    proc = _charops(["store", "ls"], _s3_env(silent_server, CHAROPS_S3_READ_TIMEOUT="1"))
    assert_one_line_error(proc, silent_server, "did not answer", "CHAROPS_S3_READ_TIMEOUT")


def test_s3_timeouts_default_to_seconds_and_are_configurable(tmp_path):
    store = S3Store("127.0.0.1:9", "bucket-x", "a", "b", secure=False)
    assert store.connect_timeout <= 10 and store.read_timeout <= 30
    env = _s3_env("http://127.0.0.1:9", CHAROPS_S3_CONNECT_TIMEOUT="2.5", CHAROPS_S3_READ_TIMEOUT="4")
    store = open_store("s3://bucket-x", env=env, check=False)
    assert (store.connect_timeout, store.read_timeout) == (2.5, 4.0)
    cfg = tmp_path / "store.yaml"
    cfg.write_text("endpoint: http://127.0.0.1:9\naccess_key: a\nsecret_key: b\nread_timeout: 7\n")
    store = open_store("s3://bucket-x", env={"CHAROPS_STORE_CONFIG": str(cfg)}, check=False)
    assert store.read_timeout == 7.0
    for bad in ("0", "-1", "soon"):
        with pytest.raises(StorageError, match="CHAROPS_S3_READ_TIMEOUT"):
            open_store("s3://bucket-x", env={**env, "CHAROPS_S3_READ_TIMEOUT": bad}, check=False)


def test_s3_endpoint_answering_html_is_not_an_s3_api(html_server):
    proc = _charops(["store", "ls"], _s3_env(html_server))
    assert_one_line_error(proc, html_server, "not an S3 API")


def test_real_s3_server_passes_the_probe(s3_server, s3_bucket):
    env = {"CHAROPS_S3_ENDPOINT": s3_server["url"], "AWS_ACCESS_KEY_ID": s3_server["access_key"],
           "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"], "HOME": "/nonexistent"}
    store = open_store(f"s3://{s3_bucket}", env=env)
    assert store.list() == []


# --- Kubeflow Pipelines ----------------------------------------------------------------------

@pytest.mark.parametrize("args", [["runs", "list"], ["runs", "get", "abc"]])
def test_kfp_host_answering_html_is_not_a_kfp_api(html_server, args):
    proc = _charops([*args, "--host", html_server], {})
    assert_one_line_error(proc, html_server, "not the Kubeflow Pipelines API")


def test_submit_to_a_host_answering_html(html_server):
    from pathlib import Path

    pipeline = Path(__file__).resolve().parents[2] / "pipelines" / "eval_only.yaml"
    proc = _charops(["submit", str(pipeline), "--param", "model=runs/m", "--host", html_server], {})
    assert_one_line_error(proc, "not the Kubeflow Pipelines API")


def test_kfp_host_that_never_answers_fails_within_seconds_naming_it(silent_server):
    proc = _charops(["runs", "list", "--host", silent_server], {"CHAROPS_KFP_READ_TIMEOUT": "1"})
    assert_one_line_error(proc, silent_server, "did not answer healthz within 1 s",
                          "CHAROPS_KFP_READ_TIMEOUT")


def test_kfp_healthz_does_not_retry_a_read_timeout_and_times_out_in_seconds(silent_server):
    from charops.pipeline import client as kfp_client

    with pytest.raises(kfp_client.KfpError, match="did not answer"):
        kfp_client.connect(silent_server, env={"CHAROPS_KFP_READ_TIMEOUT": "0.5"})
    assert len(silent_server.held) == 1  # one try: a silent server is not asked again
    assert kfp_client.DEFAULT_CONNECT_TIMEOUT <= 10 and kfp_client.DEFAULT_READ_TIMEOUT <= 30
    for bad in ("0", "-1", "soon"):
        with pytest.raises(kfp_client.KfpError, match="CHAROPS_KFP_READ_TIMEOUT"):
            kfp_client.connect(silent_server, env={"CHAROPS_KFP_READ_TIMEOUT": bad})
