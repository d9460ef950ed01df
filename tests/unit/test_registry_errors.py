"""Registry failures that used to leak: a released version claim, and registry JSON of the wrong
shape (written by hand into a store, so no checksum catches it) reported as one line, not a
traceback (issue 19: item 9 and "Tracebacks and wrong answers").

    .venv/bin/python -m pytest tests/unit/test_registry_errors.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from test_cli_models import _publish, _summary
from typer.testing import CliRunner

from charops.cli.main import app
from charops.errors import CharopsError
from charops.registry import RegistryError, list_versions, register
from charops.storage import StorageError
from charops.storage.local import LocalStore

runner = CliRunner()
LINEAGE = {"dataset_sha256": "d" * 64, "base_model": "charops:tiny"}


def _model(root: Path, weights: bytes = b"w") -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text("{}\n")
    (root / "model.safetensors").write_bytes(weights)
    return root


@pytest.fixture
def store(tmp_path, monkeypatch) -> LocalStore:
    monkeypatch.setenv("CHAROPS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("CHAROPS_ACTOR", "tester")
    return LocalStore(tmp_path / "store")


def _claims(store: LocalStore) -> list[str]:
    return [k for k in store.list("registry/") if "/claims/" in k]


# --- item 9: a failed registration releases its version claim ---------------------------------

def test_a_directory_with_success_marker_is_refused_and_leaves_no_claim(tmp_path, store):
    bad = _model(tmp_path / "bad")
    (bad / "_SUCCESS").write_text("x")
    with pytest.raises(StorageError, match="_SUCCESS"):
        register(store, bad, "m", {}, LINEAGE)
    assert _claims(store) == [] and store.list("models/") == []
    assert register(store, _model(tmp_path / "good"), "m", {}, LINEAGE)["version"] == 1


def test_a_reports_directory_with_success_marker_leaves_no_claim(tmp_path, store):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "_SUCCESS").write_text("x")
    with pytest.raises(StorageError, match="_SUCCESS"):
        register(store, _model(tmp_path / "a"), "m", {}, LINEAGE, reports_dir=reports)
    assert register(store, _model(tmp_path / "b"), "m", {}, LINEAGE)["version"] == 1


def test_a_failure_after_the_upload_releases_the_claim_and_the_uploads(tmp_path, store, monkeypatch):
    """The card write fails (a stand-in for a store that breaks mid-registration): nothing of
    version 1 stays, and the next registration is version 1, not 2."""
    real_put_json = store.put_json

    def broken(key, obj):
        if key.endswith("card.json"):
            raise OSError(28, "No space left on device")
        return real_put_json(key, obj)

    monkeypatch.setattr(store, "put_json", broken)
    with pytest.raises(OSError):
        register(store, _model(tmp_path / "a"), "m", {}, LINEAGE)
    monkeypatch.setattr(store, "put_json", real_put_json)
    assert _claims(store) == [] and store.list("models/") == [] and list_versions(store, "m") == []
    assert register(store, _model(tmp_path / "b"), "m", {}, LINEAGE)["version"] == 1


def test_a_successful_registration_keeps_its_claim_and_numbers_stay_consecutive(tmp_path, store):
    register(store, _model(tmp_path / "a", b"a"), "m", {}, LINEAGE)
    register(store, _model(tmp_path / "b", b"b"), "m", {}, LINEAGE)
    assert list_versions(store, "m") == [1, 2]
    assert sorted(_claims(store)) == ["registry/m/claims/1.json", "registry/m/claims/2.json"]


@pytest.mark.parametrize(("name", "data", "words"), [
    ("training_summary.json", b"\xff\xfe\x00binary", "not UTF-8"),
    ("training_summary.json", b"[1, 2]", "not a training summary"),
    ("characters.jsonl", b'{"name": "a"}\n\x80\x81\n', "not UTF-8")])
def test_a_model_directory_with_binary_or_misshapen_files_is_refused_before_any_upload(tmp_path, store, name,
                                                                                        data, words):
    model = _model(tmp_path / "m")
    (model / name).write_bytes(data)
    with pytest.raises(CharopsError, match=words):
        register(store, model, "m", {}, LINEAGE)
    assert store.list("") == []


# --- wrong shapes: one line, exit 2 ---------------------------------------------------------

def _write_raw(store: LocalStore, key: str, data: bytes) -> None:
    """Put bytes in the store the way a person editing the directory would: no .meta checksum."""
    path = store.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    (store.root / ".meta" / f"{key}.json").unlink(missing_ok=True)


ENTRY_SHAPES = [b"[1, 2]", b'{"version": 1}', b'{"name": "chat", "version": 1, "model_sha256": 5}',
                b'"text"']


EVENT_SHAPES = [b"[]", b'{"seq": 1}', b'{"seq": 1, "id": "a", "kind": "promote", "version": 1, '
                b'"from": "none", "to": "staging", "changes": "all", "stages": {"1": "staging"}, '
                b'"actor": "x", "reason": "", "force": false, "at": "t", "parent": null, "gate": null}',
                b'{"seq": 1, "id": "a", "kind": "promote", "version": 1, "from": "none", '
                b'"to": "staging", "changes": [{"version": 1, "from": "none", "to": "staging"}], '
                b'"stages": ["staging"], "actor": "x", "reason": "", "force": false, "at": "t"}']
REGISTRY_COMMANDS = (["registry", "list"], ["registry", "show", "chat"], ["registry", "history", "chat"],
                     ["promote", "chat", "1", "--to", "staging"], ["deploy", "chat", "--local", "--version", "1"],
                     ["deploy", "chat", "--local"])


@pytest.mark.parametrize(("key", "data", "what"), [
    *(("registry/chat/1.json", d, "not a charops registry entry") for d in ENTRY_SHAPES),
    *(("registry/chat/stages/00000001.json", d, "not a charops stage event") for d in EVENT_SHAPES)])
def test_an_entry_or_stage_event_of_the_wrong_shape_is_one_line_in_every_command(tmp_path, store, key,
                                                                                 data, what):
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    if "stages" in key:  # a real history first, then its event replaced
        assert runner.invoke(app, ["promote", "chat", "1", "--to", "staging"]).exit_code == 0
    _write_raw(store, key, data)
    # deploy reads the entry it is given (--version) or the production one (the stage history)
    skip = ["deploy", "chat", "--local"] if "stages" not in key else ["deploy", "chat", "--local", "--version", "1"]
    for args in REGISTRY_COMMANDS:
        if args != skip:
            assert_one_line_error(runner.invoke(app, args), key, what)
    if "stages" not in key:  # a new registration reads the existing entries too
        with pytest.raises(RegistryError, match=what):
            register(store, _model(tmp_path / "x"), "chat", {}, LINEAGE)


@pytest.mark.parametrize("data", [b"\xff\xfe\x00\x01binary\x80", b"[]", b'{"name": "chat"}',
                                  json.dumps({"schema": "x"}).encode()])
def test_a_card_binary_or_of_the_wrong_shape_is_one_line(tmp_path, store, data):
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    _write_raw(store, "models/chat/1/card.json", data)
    for args in (["registry", "show", "chat"], ["registry", "show", "chat", "--json"]):
        assert_one_line_error(runner.invoke(app, args), "models/chat/1/card.json")


def test_a_card_with_a_nested_field_of_the_wrong_shape_is_one_line(tmp_path, store):
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    card = store.get_json("models/chat/1/card.json")
    card["eval_summary"]["judge"] = ["not", "a", "mapping"]
    _write_raw(store, "models/chat/1/card.json", json.dumps(card).encode())
    assert_one_line_error(runner.invoke(app, ["registry", "show", "chat"]), "models/chat/1/card.json",
                          "wrong shape")


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_promote_eval_summary_that_is_a_directory_or_binary_is_one_line(tmp_path, store, kind):
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    path = tmp_path / "summary"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    assert_one_line_error(runner.invoke(app, ["promote", "chat", "1", "--to", "staging",
                                              "--eval-summary", str(path)]), str(path))


# --- messages that say what is really wrong -------------------------------------------------

def test_a_version_number_too_large_says_there_is_no_such_version(tmp_path, store):
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    line = assert_one_line_error(runner.invoke(app, ["registry", "show", "chat", "99999999999"]),
                                 "no version 99999999999", "versions: 1")
    assert "use a number" not in line
    assert_one_line_error(runner.invoke(app, ["promote", "chat", "99999999999", "--to", "staging"]),
                          "99999999999")
    assert_one_line_error(runner.invoke(app, ["registry", "show", "chat", "v1"]), "use a number")


def test_a_store_that_is_a_file_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("CHAROPS_STORE", raising=False)
    not_a_store = tmp_path / "passwd"
    not_a_store.write_text("root:x:0:0::/root:/bin/sh\n")
    for args in (["registry", "list"], ["store", "ls"]):
        line = assert_one_line_error(runner.invoke(app, [*args, "--store", str(not_a_store)]),
                                     str(not_a_store), "not a store")
        assert "no models registered" not in line
    res = runner.invoke(app, ["registry", "list", "--store", str(tmp_path / "nowhere")])
    assert res.exit_code == 0 and "the directory does not exist" in res.stdout


# --- the old group name ------------------------------------------------------------------------

def test_models_is_a_hidden_deprecated_alias_of_registry(tmp_path, store):
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    new = runner.invoke(app, ["registry", "list", "--json"])
    old = runner.invoke(app, ["models", "list", "--json"])
    assert new.exit_code == old.exit_code == 0
    assert json.loads(old.stdout) == json.loads(new.stdout)
    assert new.stderr == "" and "deprecated" in old.stderr and "charops registry" in old.stderr
    listed = [line.split()[0] for line in runner.invoke(app, ["--help"]).stdout.split("Commands:")[1]
              .splitlines() if line.startswith("  ") and line.strip()]
    assert "registry" in listed and "model" in listed and "models" not in listed
