"""`charops deploy --local` without starting a server: which registry version it picks, the
integrity check of the copy it serves, and its one-line errors. (Serving itself:
tests/unit/test_serve.py.)

    .venv/bin/python -m pytest tests/unit/test_deploy_local.py -x -q
"""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from charops.cli.deploy import registry_model_dir
from charops.cli.main import app
from charops.errors import CharopsError
from charops.io import sha256_tree
from charops.registry import register
from charops.registry.stages import transition
from charops.storage import open_store


@pytest.fixture
def registry(tmp_path, serve_model_dir, monkeypatch):
    """A local store with charops-chat v1 (serve_model_dir) and v2 (other weights' file)."""
    monkeypatch.setenv("CHAROPS_CACHE", str(tmp_path / "cache"))
    store = open_store(str(tmp_path / "store"))
    v2 = tmp_path / "v2"
    shutil.copytree(serve_model_dir, v2)
    (v2 / "generation_config.json").write_text('{"eos_token_id": [2, 0], "pad_token_id": 0}')
    register(store, serve_model_dir, "charops-chat", {}, {})
    register(store, v2, "charops-chat", {}, {})
    return store


def test_serves_the_production_version_or_the_one_asked_for(registry, serve_model_dir):
    with pytest.raises(CharopsError, match="no production version"):
        registry_model_dir(registry.url, "charops-chat", None)
    transition(registry, "charops-chat", 1, "production", actor="test", reason="first")
    path, entry = registry_model_dir(registry.url, "charops-chat", None)
    assert entry["version"] == 1 and sha256_tree(path) == sha256_tree(serve_model_dir)
    assert (path / "characters.jsonl").is_file()  # the characters travel with the model
    path2, entry2 = registry_model_dir(registry.url, "charops-chat", "2")
    assert entry2["version"] == 2 and path2 != path
    transition(registry, "charops-chat", 2, "production", actor="test", reason="better")
    assert registry_model_dir(registry.url, "charops-chat", None)[1]["version"] == 2


def test_a_damaged_copy_is_fetched_again_and_a_damaged_store_refused(registry):
    path, _ = registry_model_dir(registry.url, "charops-chat", "1")
    (path / "config.json").write_text("{}")  # the cached copy was changed: download again
    path, entry = registry_model_dir(registry.url, "charops-chat", "1")
    assert sha256_tree(path) == entry["model_sha256"]
    stored = registry.root / "models" / "charops-chat" / "1" / "model" / "config.json"
    stored.write_text("{}")  # the store itself is damaged
    (path / "config.json").write_text("{ }")
    with pytest.raises(CharopsError):
        registry_model_dir(registry.url, "charops-chat", "1")


@pytest.mark.parametrize("args,message", [
    (["deploy", "charops-chat", "--model", "/nonexistent"], "is not a model directory"),
    (["deploy", "charops-chat", "--model", "x", "--version", "1"], "not both"),
    (["deploy", "Bad_Name", "--local"], "model name 'Bad_Name'"),
])
def test_cli_errors_are_one_line(args, message):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
