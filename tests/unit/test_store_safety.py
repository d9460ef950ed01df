"""``charops store put/get`` never overwrite or corrupt what is there without --force (issue 7).

Every test runs against a local store and a real S3 server (SeaweedFS, tests/conftest.py).

    .venv/bin/python -m pytest tests/unit/test_store_safety.py -x -q
"""

from __future__ import annotations

import pytest
from conftest import assert_one_line_error
from typer.testing import CliRunner

from charops.cli.main import app
from charops.storage import open_store

runner = CliRunner()


@pytest.fixture(params=["local", "s3"])
def store_env(request, tmp_path, monkeypatch):
    """CHAROPS_STORE (and S3 settings) for one store; returns the opened store."""
    monkeypatch.setenv("CHAROPS_STORE_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.delenv("CHAROPS_STORE_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if request.param == "local":
        monkeypatch.setenv("CHAROPS_STORE", str(tmp_path / "store"))
    else:
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("CHAROPS_STORE", f"s3://{bucket}/safety")
        monkeypatch.setenv("CHAROPS_S3_ENDPOINT", server["url"])
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", server["access_key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server["secret_key"])
    return open_store()


@pytest.fixture
def published(store_env, tmp_path):
    """A directory published at models/m: (store, local dir)."""
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"a": 1}\n')
    (d / "sub" / "w.bin").write_bytes(b"weights")
    res = runner.invoke(app, ["store", "put", str(d), "models/m"])
    assert res.exit_code == 0, res.output
    return store_env, d


def test_put_refuses_internal_prefixes(store_env, tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    for key in (".meta/x.json", ".staging/abc/f.txt"):
        assert_one_line_error(runner.invoke(app, ["store", "put", str(f), key]), key, "--force")
        assert not store_env.exists(key)
    assert runner.invoke(app, ["store", "put", str(f), ".staging/abc/f.txt", "--force"]).exit_code == 0


def test_put_refuses_to_change_a_published_prefix(published, tmp_path):
    store, d = published
    manifest = store.get_json("models/m/_SUCCESS")
    evil = tmp_path / "evil.json"
    evil.write_text('{"evil": true}\n')
    for key in ("models/m/config.json", "models/m/_SUCCESS", "models/m/new/file.json"):
        assert_one_line_error(runner.invoke(app, ["store", "put", str(evil), key]), "published", "models/m", "--force")
    assert store.get_json("models/m/_SUCCESS") == manifest
    assert store.get_json("models/m/config.json") == {"a": 1}
    # A directory onto a prefix that holds anything (a republish replaces it all): --force.
    assert_one_line_error(runner.invoke(app, ["store", "put", str(d), "models/m"]), "models/m", "--force")
    assert_one_line_error(runner.invoke(app, ["store", "put", str(d), "models"]), "models", "--force")
    assert store.get_json("models/m/_SUCCESS") == manifest
    res = runner.invoke(app, ["store", "put", str(evil), "models/m/config.json", "--force"])
    assert res.exit_code == 0, res.output
    assert store.get_json("models/m/config.json") == {"evil": True}


def test_put_onto_a_prefix_or_under_a_file_is_a_one_line_error(published, tmp_path):
    store, d = published
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert_one_line_error(runner.invoke(app, ["store", "put", str(f), "models", "--force"]), "models", "folder")
    assert_one_line_error(runner.invoke(app, ["store", "put", str(f), "models/m/config.json/x", "--force"]),
           "models/m/config.json", "is a file")
    assert_one_line_error(runner.invoke(app, ["store", "put", str(d), "models/m/config.json", "--force"]),
           "models/m/config.json", "is a file")
    assert store.get_json("models/m/config.json") == {"a": 1}


def test_get_refuses_to_overwrite_a_local_file(published, tmp_path):
    target = tmp_path / "mine.json"
    target.write_text("precious")
    assert_one_line_error(runner.invoke(app, ["store", "get", "models/m/config.json", str(target)]), str(target), "--force")
    assert target.read_text() == "precious"
    res = runner.invoke(app, ["store", "get", "models/m/config.json", str(target), "--force"])
    assert res.exit_code == 0, res.output
    assert target.read_text() == '{"a": 1}\n'


def test_get_object_into_a_directory_keeps_its_name(published, tmp_path, monkeypatch):
    folder = tmp_path / "dl"
    folder.mkdir()
    res = runner.invoke(app, ["store", "get", "models/m/config.json", str(folder)])
    assert res.exit_code == 0, res.output
    assert (folder / "config.json").read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    monkeypatch.chdir(folder)
    assert_one_line_error(runner.invoke(app, ["store", "get", "models/m/config.json", "."]), "config.json", "--force")


def test_get_prefix_into_the_current_directory_is_refused(published, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for args in (["."], [".", "--force"], [str(tmp_path), "--force"]):
        res = runner.invoke(app, ["store", "get", "models/m", *args])
        assert_one_line_error(res)
    assert (work / "notes.txt").read_text() == "mine"
    target = tmp_path / "afile"
    target.write_text("x")
    assert_one_line_error(runner.invoke(app, ["store", "get", "models/m", str(target), "--force"]), str(target), "is a file")
    assert target.read_text() == "x"


# --- a download never writes into, over or around its own store (issue 19, item 7) --------------

@pytest.fixture
def local_published(tmp_path, monkeypatch):
    """A local store holding a published prefix and a registry entry: (store, root)."""
    from charops.storage.local import LocalStore

    root = tmp_path / "store"
    monkeypatch.setenv("CHAROPS_STORE", str(root))
    store = LocalStore(root)
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"a": 1}\n')
    (d / "w.bin").write_bytes(b"weights")
    store.put_dir(d, "models/m/1/model")
    store.put_json("registry/m/1.json", {"version": 1})
    return store, root


def _intact(store) -> None:
    assert store.get_json("registry/m/1.json") == {"version": 1}
    assert store.get_json("models/m/1/model/config.json") == {"a": 1}
    assert store.exists("models/m/1/model/_SUCCESS")


def test_get_refuses_the_store_itself_inside_it_or_around_it_even_with_force(local_published, tmp_path):
    store, root = local_published
    link = tmp_path / "alias"
    link.symlink_to(root)
    for dest in (root, root / "models", root / "new-folder", link, link / "x", tmp_path):
        for args in ([], ["--force"]):
            res = runner.invoke(app, ["store", "get", "models/m/1/model", str(dest), *args, "--store", str(root)])
            assert_one_line_error(res, str(dest), "overlaps the store")
            _intact(store)


def test_get_of_one_object_refuses_a_destination_in_the_store(local_published, tmp_path):
    store, root = local_published
    for dest in (root / "models/m/1/model/w.bin", root / "registry/m/1.json", root,
                 tmp_path / "alias2"):
        if dest.name == "alias2":
            dest.symlink_to(root / "registry/m/1.json")
        res = runner.invoke(app, ["store", "get", "models/m/1/model/config.json", str(dest), "--force"])
        assert_one_line_error(res, "overlaps the store")
        _intact(store)
    assert store.get_file("models/m/1/model/w.bin", tmp_path / "ok.bin").path.read_bytes() == b"weights"


def test_an_object_into_a_folder_that_holds_the_store_is_fine(local_published, tmp_path):
    """``charops store get KEY .`` beside the default ./.charops/store writes ./NAME: allowed."""
    store, root = local_published
    res = runner.invoke(app, ["store", "get", "models/m/1/model/config.json", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "config.json").read_text() == '{"a": 1}\n'
    _intact(store)


def test_the_library_refuses_too(local_published, tmp_path):
    from charops.storage import StorageError

    store, root = local_published
    with pytest.raises(StorageError, match="overlaps the store"):
        store.download_prefix("models/m/1/model", root, overwrite=True)
    with pytest.raises(StorageError, match="overlaps the store"):
        store.get_file("models/m/1/model/config.json", root / "registry/m/1.json")
    _intact(store)
