"""Model references that look like paths never go to the Hugging Face hub (issue 7).

The "hub" here is a tiny HTTP server on 127.0.0.1 set as ``HF_ENDPOINT`` that records every
request and answers 404 (it is NOT the Hugging Face hub): whether charops contacted the hub is
then a fact the test can read. Each case runs in a fresh interpreter because huggingface_hub
reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported.

    .venv/bin/python -m pytest tests/unit/test_model_refs.py -x -q
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def fake_hub():
    """{"url", "requests"}: every path asked for lands in requests."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _404(self):
            seen.append(self.path)
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = _404

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "requests": seen}
    httpd.shutdown()
    httpd.server_close()


def _resolve(ref: str, cwd, hub: dict, **env: str) -> str:
    """resolve_model(ref) in a fresh interpreter; returns the error line (it must fail)."""
    full = {**os.environ, "HF_ENDPOINT": hub["url"], "HF_HOME": str(cwd / "hf-home"),
            "CHAROPS_CACHE": str(cwd / "cache"), **env}
    full.pop("HF_HUB_OFFLINE", None) if "HF_HUB_OFFLINE" not in env else None
    code = ("import sys\nfrom charops.errors import CharopsError\nfrom charops.model.load import resolve_model\n"
            "try:\n    resolve_model(sys.argv[1])\nexcept CharopsError as e:\n    print(e)\n    sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", code, ref], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("ref", ["runs/bsae", "runs/base", "data/model", "./m", "mymodel", "a/b/c", "~/nope/m"])
def test_path_like_references_are_never_sent_to_the_hub(tmp_path, fake_hub, ref):
    (tmp_path / "runs").mkdir()
    (tmp_path / "data").mkdir()
    msg = _resolve(ref, tmp_path, fake_hub)
    assert fake_hub["requests"] == []
    assert f"base model '{ref}'" in msg and "does not exist" in msg
    assert "local path" in msg and "hub" not in msg.split(";")[0]


def test_org_name_ids_go_to_the_hub_and_say_so(tmp_path, fake_hub):
    msg = _resolve("some-org/some-model", tmp_path, fake_hub)
    assert fake_hub["requests"], "the hub was asked"
    assert "'some-org/some-model'" in msg and "Hugging Face hub" in msg and "tried" in msg


def test_hf_hub_offline_means_the_hub_is_not_tried(tmp_path, fake_hub):
    msg = _resolve("some-org/some-model", tmp_path, fake_hub, HF_HUB_OFFLINE="1")
    assert fake_hub["requests"] == []
    assert "HF_HUB_OFFLINE" in msg and "not tried" in msg


def test_an_org_folder_that_exists_makes_it_a_path(tmp_path, fake_hub):
    (tmp_path / "some-org").mkdir()
    msg = _resolve("some-org/some-model", tmp_path, fake_hub)
    assert fake_hub["requests"] == []
    assert "does not exist" in msg and "local path" in msg


def test_a_file_uri_is_the_directory_in_place(micro_model_dir, tmp_path):
    """A local registry entry's model_uri is file://...: it resolves to that directory."""
    from charops.errors import CharopsError
    from charops.model.load import resolve_model

    assert resolve_model(micro_model_dir.as_uri()) == micro_model_dir
    with pytest.raises(CharopsError, match="does not exist"):
        resolve_model((tmp_path / "gone").as_uri())
