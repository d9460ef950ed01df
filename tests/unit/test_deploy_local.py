"""`charops serve` (and `charops deploy --local`, which hands over to it) without serving: which
registry version it picks, the integrity check of the copy it serves, and its one-line errors,
among them an address it cannot listen on. (Serving itself: tests/unit/test_serve.py.)

    .venv/bin/python -m pytest tests/unit/test_deploy_local.py -x -q
"""

from __future__ import annotations

import socket

import pytest
from conftest import two_version_registry
from typer.testing import CliRunner

from charops.cli.main import app
from charops.errors import CharopsError
from charops.io import sha256_tree
from charops.registry.download import local_model_dir
from charops.registry.stages import transition


@pytest.fixture
def registry(tmp_path, serve_model_dir, monkeypatch):
    """A local store with charops-chat v1 (serve_model_dir) and v2 (other weights' file)."""
    monkeypatch.setenv("CHAROPS_CACHE", str(tmp_path / "cache"))
    return two_version_registry(tmp_path, serve_model_dir)


def test_serves_the_production_version_or_the_one_asked_for(registry, serve_model_dir):
    with pytest.raises(CharopsError, match="no production version"):
        local_model_dir(registry.url, "charops-chat", None)
    transition(registry, "charops-chat", 1, "production", actor="test", reason="first")
    path, entry = local_model_dir(registry.url, "charops-chat", None)
    assert entry["version"] == 1 and sha256_tree(path) == sha256_tree(serve_model_dir)
    assert (path / "characters.jsonl").is_file()  # the characters travel with the model
    path2, entry2 = local_model_dir(registry.url, "charops-chat", "2")
    assert entry2["version"] == 2 and path2 != path
    transition(registry, "charops-chat", 2, "production", actor="test", reason="better")
    assert local_model_dir(registry.url, "charops-chat", None)[1]["version"] == 2


def test_a_damaged_copy_is_fetched_again_and_a_damaged_store_refused(registry):
    path, _ = local_model_dir(registry.url, "charops-chat", "1")
    (path / "config.json").write_text("{}")  # the cached copy was changed: download again
    path, entry = local_model_dir(registry.url, "charops-chat", "1")
    assert sha256_tree(path) == entry["model_sha256"]
    stored = registry.root / "models" / "charops-chat" / "1" / "model" / "config.json"
    stored.write_text("{}")  # the store itself is damaged
    (path / "config.json").write_text("{ }")
    with pytest.raises(CharopsError):
        local_model_dir(registry.url, "charops-chat", "1")


@pytest.mark.parametrize("args,message", [
    (["deploy", "charops-chat", "--model", "/nonexistent"], "is not a model directory"),
    (["serve", "/nonexistent"], "is not a model directory"),
    (["deploy", "charops-chat", "--model", "x", "--version", "1"], "not both"),
    (["deploy", "Bad_Name", "--local"], "model name 'Bad_Name'"),
    (["serve", "Bad_Name"], "model name 'Bad_Name'"),
    (["deploy", "charops-chat", "--local", "--canary", "10"], "--canary: cluster options"),
    (["deploy", "charops-chat", "--port", "9000"], "unknown option(s) for a cluster deploy: --port"),
])
def test_cli_errors_are_one_line(args, message):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


@pytest.fixture
def busy_port():
    """A port something listens on (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("how", ["serve", "deploy --local"])
@pytest.mark.parametrize("flags,message", [
    (["--port", "BUSY"], "is in use (another server?)"),
    (["--host", "8.8.8.8"], "8.8.8.8 is not an address of this machine"),
    (["--host", "no-such-host.invalid"], "cannot resolve --host 'no-such-host.invalid'"),
    (["--port", "70000"], "port 70000 is not a TCP port"),
    (["--port", "0"], "port 0 is not a TCP port"),
])
def test_an_address_it_cannot_listen_on_is_one_line(serve_model_dir, busy_port, how, flags, message):
    """Issue 19: these were a 100-line traceback (exit 3) or an OverflowError."""
    flags = [str(busy_port) if f == "BUSY" else f for f in flags]
    args = ["serve", str(serve_model_dir)] if how == "serve" else ["deploy", "charops-chat", "--model",
                                                                      str(serve_model_dir)]
    r = CliRunner().invoke(app, [*args, *flags])
    assert r.exit_code == 2, r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith("error: serve: ") and message in line
