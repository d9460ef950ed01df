"""charops.registry: versions, idempotence, lineage, entry-last publishing.

    .venv/bin/python -m pytest tests/unit/test_registry.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charops.io import sha256_tree
from charops.registry import (
    RegistryError,
    entry_markdown,
    get_entry,
    list_versions,
    register,
)
from charops.storage.local import LocalStore


def _model(root: Path, weights: bytes = b"\x00\x01weights") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "qwen2"}\n', encoding="utf-8")
    (root / "model.safetensors").write_bytes(weights)
    (root / "tokenizer.json").write_text("{}\n", encoding="utf-8")
    return root


def _reports(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics.json").write_text('{"model": {"loss": 2.5}}\n', encoding="utf-8")
    (root / "report.md").write_text("# Held-out evaluation\n", encoding="utf-8")
    return root


LINEAGE = {"dataset_sha256": "d" * 64, "base_model": "charops:tiny",
           "pipeline_version": "0.1.0-12345678", "run_id": "run-1"}


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_first_registration_publishes_model_reports_and_entry(tmp_path, store):
    model = _model(tmp_path / "m")
    entry = register(store, model, "charops-chat", {"model.loss": 2.5}, LINEAGE,
                     reports_dir=_reports(tmp_path / "r"))
    assert entry["version"] == 1
    assert entry["model_sha256"] == sha256_tree(model)
    assert entry["lineage"] == LINEAGE and entry["metrics"] == {"model.loss": 2.5}
    assert entry["model_uri"] == store.url_for("models/charops-chat/1/model")
    # What is in the store is what was registered, byte for byte.
    back = store.download_prefix("models/charops-chat/1/model", tmp_path / "back")
    assert sha256_tree(back) == sha256_tree(model)
    reports = store.download_prefix("models/charops-chat/1/reports", tmp_path / "back-r")
    assert json.loads((reports / "metrics.json").read_text()) == {"model": {"loss": 2.5}}
    assert store.get_json("registry/charops-chat/1.json") == entry
    assert get_entry(store, "charops-chat") == entry


def test_same_content_is_not_a_new_version_but_new_content_is(tmp_path, store):
    first = register(store, _model(tmp_path / "a"), "m", {}, LINEAGE)
    again = register(store, _model(tmp_path / "a-copy"), "m", {}, {**LINEAGE, "run_id": "run-2"})
    assert again == first and list_versions(store, "m") == [1]

    second = register(store, _model(tmp_path / "b", b"other weights"), "m", {"loss": 1.0}, LINEAGE)
    assert second["version"] == 2 and list_versions(store, "m") == [1, 2]
    assert get_entry(store, "m")["version"] == 2
    assert get_entry(store, "m", 1)["model_sha256"] == first["model_sha256"]
    assert get_entry(store, "m", "1") == first
    # Names are separate sequences.
    assert register(store, _model(tmp_path / "c", b"third"), "other", {}, LINEAGE)["version"] == 1


def test_versions_sort_numerically(tmp_path, store):
    for i in range(11):
        register(store, _model(tmp_path / f"m{i}", f"w{i}".encode()), "m", {}, LINEAGE)
    assert list_versions(store, "m") == list(range(1, 12))
    assert get_entry(store, "m")["version"] == 11


def test_entry_is_written_last(tmp_path, store, monkeypatch):
    """If publishing the reports fails, no entry exists: the version was never registered."""
    real_put_dir = store.put_dir
    calls = []

    def failing_put_dir(local_dir, prefix):
        calls.append(prefix)
        if prefix.endswith("/reports"):
            raise OSError("disk full")
        return real_put_dir(local_dir, prefix)

    monkeypatch.setattr(store, "put_dir", failing_put_dir)
    with pytest.raises(OSError):
        register(store, _model(tmp_path / "m"), "m", {}, LINEAGE, reports_dir=_reports(tmp_path / "r"))
    assert calls == ["models/m/1/model", "models/m/1/reports"]
    assert list_versions(store, "m") == []
    with pytest.raises(RegistryError, match="not registered"):
        get_entry(store, "m")


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "trail-", "a/b", "x" * 64, "sp ace"])
def test_bad_names_are_refused(tmp_path, store, name):
    with pytest.raises(RegistryError, match="model name"):
        register(store, _model(tmp_path / "m"), name, {}, LINEAGE)


def test_bad_inputs_are_one_line_errors(tmp_path, store):
    with pytest.raises(RegistryError, match="no config.json"):
        register(store, tmp_path, "m", {}, LINEAGE)
    with pytest.raises(RegistryError, match="reports directory"):
        register(store, _model(tmp_path / "m"), "m", {}, LINEAGE, reports_dir=tmp_path / "nope")
    register(store, _model(tmp_path / "m"), "m", {}, LINEAGE)
    with pytest.raises(RegistryError, match="has no version 7 \\(versions: 1\\)"):
        get_entry(store, "m", 7)
    with pytest.raises(RegistryError, match="not an integer"):
        get_entry(store, "m", "newest")


def test_entry_markdown_lists_lineage_and_metrics(tmp_path, store):
    entry = register(store, _model(tmp_path / "m"), "m", {"model.loss": 2.25, "note": "x"}, LINEAGE)
    card = entry_markdown(entry)
    assert card.startswith("# m v1\n")
    assert "| model.loss | 2.25 |" in card and "note" not in card
    assert "- run_id: `run-1`" in card and entry["model_sha256"] in card


def test_a_concurrently_taken_version_is_not_overwritten(tmp_path, store, monkeypatch):
    """Another run registers version 1 while this one uploads: this one fails, theirs stays."""
    theirs = register(store, _model(tmp_path / "theirs", b"theirs"), "m", {}, LINEAGE)
    real_list = store.list
    monkeypatch.setattr(store, "list", lambda prefix="": [] if prefix == "registry/m/" else real_list(prefix))
    with pytest.raises(RegistryError, match="registered concurrently"):
        register(store, _model(tmp_path / "mine", b"mine"), "m", {}, LINEAGE)
    monkeypatch.setattr(store, "list", real_list)
    assert get_entry(store, "m") == theirs
    back = store.download_prefix("models/m/1/model", tmp_path / "back")
    assert sha256_tree(back) == theirs["model_sha256"]


def test_concurrent_registrations_get_distinct_versions_and_intact_models(tmp_path, store):
    """Eight registrations at once: each that succeeds has its own number and its own files;
    the others fail with a retry message (nothing of theirs is in the store)."""
    from concurrent.futures import ThreadPoolExecutor

    models = [_model(tmp_path / f"m{i}", f"weights {i}".encode() * 1000) for i in range(8)]

    def attempt(model):
        try:
            return register(store, model, "m", {}, LINEAGE)
        except RegistryError as exc:
            assert "retry the registration" in str(exc)
            return None

    with ThreadPoolExecutor(8) as pool:
        entries = [e for e in pool.map(attempt, models) if e is not None]
    assert entries and len({e["version"] for e in entries}) == len(entries)
    for e in entries:
        back = store.download_prefix(f"models/m/{e['version']}/model", tmp_path / f"back{e['version']}")
        assert sha256_tree(back) == e["model_sha256"]
    assert list_versions(store, "m") == sorted(e["version"] for e in entries)
    # Retrying the losers succeeds, with numbers after every claimed one.
    for model in models:
        register(store, model, "m", {}, LINEAGE)
    assert len(list_versions(store, "m")) == 8
