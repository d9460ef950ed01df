"""The artifact store against a local directory and a real S3 server (SeaweedFS `weed mini`).

    .venv/bin/python -m pytest tests/unit/test_storage.py -x -q

Every behaviour test runs on both stores (parametrized): what works locally works on S3.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import threading
import time
from pathlib import Path

import pytest

from charops.io import sha256_file, sha256_tree
from charops.storage import LocalStore, S3Store, StorageError, open_store
from charops.storage.store import MARKER, file_digests

BIG = 6_500_000  # > one 5 MiB part: a two-part multipart upload


@pytest.fixture
def store(local_and_s3_store):
    return local_and_s3_store  # tests/conftest.py: local, then S3 (prefix "charops")


def _raw_put(store, key: str, data: bytes) -> None:
    """Replace an object's bytes behind the store's back (a corrupted/tampered object)."""
    if isinstance(store, LocalStore):
        (store.root / key).write_bytes(data)
    else:
        store.client.put_object(store.bucket, store._name(key), io.BytesIO(data), len(data))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A model-like directory: one multipart-sized file and many small ones in subfolders."""
    root = tmp_path_factory.mktemp("tree") / "model"
    rng = random.Random(0)
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "model.safetensors").write_bytes(rng.randbytes(BIG))
    for i in range(40):
        sub = root / f"shard{i % 4}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i}.json").write_text(f'{{"i": {i}}}\n' * (i + 1))
    (root / "empty.txt").write_bytes(b"")
    return root


def test_file_digests_match_s3_etag_rules(tmp_path):
    data = bytes(range(256)) * 50_000  # 12.8 MB
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    part = 5 * 1024 * 1024
    parts = [data[i:i + part] for i in range(0, len(data), part)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert file_digests(path, part) == (hashlib.sha256(data).hexdigest(), expected)
    assert file_digests(path, 0) == (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())
    exact = tmp_path / "exact.bin"
    exact.write_bytes(data[: 2 * part])  # a whole number of parts: no empty trailing part
    assert file_digests(exact, part)[1].endswith("-2")


def test_dir_round_trip(store, tree, tmp_path):
    manifest = store.put_dir(tree, "models/sft/run1")
    assert len(manifest["files"]) == 42
    big = manifest["files"]["weights/model.safetensors"]
    assert big == {"size": BIG, "sha256": sha256_file(tree / "weights/model.safetensors")}
    assert store.exists(f"models/sft/run1/{MARKER}")
    assert store.list("models") == sorted(
        [f"models/sft/run1/{rel}" for rel in manifest["files"]] + [f"models/sft/run1/{MARKER}"])
    out = store.download_prefix("models/sft/run1", tmp_path / "out")
    assert sha256_tree(out) == sha256_tree(tree)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(manifest["files"])
    if isinstance(store, S3Store):  # the big file went up in two parts and nothing is left staged
        stat = store.client.stat_object(store.bucket, "charops/models/sft/run1/weights/model.safetensors")
        assert stat.etag.strip('"').endswith("-2")
        assert [o.object_name for o in store.client.list_objects(store.bucket, recursive=True)
                if ".staging" in o.object_name] == []
    assert store.list(".staging") == []


def test_uploads_run_in_parallel(store, tree, monkeypatch):
    active, peak, lock = 0, 0, threading.Lock()
    put_file = store.put_file

    def tracking(local, key):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        try:
            return put_file(local, key)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(store, "put_file", tracking)
    store.put_dir(tree, "p")
    assert peak > 1


def test_republish_replaces_content_and_drops_stale_files(store, tree, tmp_path):
    store.put_dir(tree, "data/set")
    smaller = tmp_path / "smaller"
    smaller.mkdir()
    (smaller / "only.txt").write_text("new")
    store.put_dir(smaller, "data/set")
    assert store.list("data/set") == ["data/set/_SUCCESS", "data/set/only.txt"]
    out = store.download_prefix("data/set", tmp_path / "out")
    assert (out / "only.txt").read_text() == "new"


def test_corrupted_object_is_caught_on_download(store, tree, tmp_path):
    store.put_dir(tree, "m")
    original = (tree / "shard1" / "f1.json").read_bytes()
    _raw_put(store, "m/shard1/f1.json", original.replace(b"1", b"7"))  # same size, new bytes
    with pytest.raises(StorageError, match="checksum mismatch") as exc:
        store.download_prefix("m", tmp_path / "out")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_corrupted_single_file_is_caught(store, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"abcdefgh" * 1000)
    info = store.put_file(src, "f/a.bin")
    assert info.sha256 == sha256_file(src) and info.size == 8000
    if isinstance(store, S3Store):
        # Keep the recorded sha256 (object metadata) but change the bytes.
        store.client.put_object(store.bucket, store._name("f/a.bin"), io.BytesIO(b"x" * 8000), 8000,
                                metadata={"charops-sha256": info.sha256})
    else:
        _raw_put(store, "f/a.bin", b"x" * 8000)
    with pytest.raises(StorageError, match="checksum mismatch"):
        store.get_file("f/a.bin", tmp_path / "got.bin")
    assert not (tmp_path / "got.bin").exists() and not (tmp_path / "got.bin.part").exists()


def test_download_resumes_from_part_file(store, tree, tmp_path):
    src = tree / "weights" / "model.safetensors"
    store.put_file(src, "big.bin")
    dest = tmp_path / "big.bin"
    done = 4_000_000
    (tmp_path / "big.bin.part").write_bytes(src.read_bytes()[:done])  # an interrupted download
    transfer = store.get_file("big.bin", dest)
    # Only the missing tail crossed the wire (a Range request from the .part's size) ...
    assert transfer.resumed_from == done
    assert transfer.bytes_transferred == BIG - done
    # ... and the whole file is verified.
    assert sha256_file(dest) == sha256_file(src) == transfer.sha256
    assert not (tmp_path / "big.bin.part").exists()


def test_stale_part_file_restarts_from_zero(store, tmp_path):
    src = tmp_path / "v2.bin"
    src.write_bytes(os.urandom(100_000))
    store.put_file(src, "obj.bin")
    (tmp_path / "got.bin.part").write_bytes(b"\0" * 30_000)  # left over from another version
    transfer = store.get_file("obj.bin", tmp_path / "got.bin")
    assert transfer.resumed_from == 0 and transfer.bytes_transferred == 100_000 + 70_000
    assert (tmp_path / "got.bin").read_bytes() == src.read_bytes()


def test_half_published_prefix_is_invisible(store, tree, tmp_path, monkeypatch):
    put_json = store.put_json

    def crash_on_marker(key, obj):
        if key.endswith(MARKER):
            raise KeyboardInterrupt("simulated crash before the marker")
        return put_json(key, obj)

    monkeypatch.setattr(store, "put_json", crash_on_marker)
    with pytest.raises(KeyboardInterrupt):
        store.put_dir(tree, "models/half")
    monkeypatch.undo()
    assert not store.exists(f"models/half/{MARKER}")
    with pytest.raises(StorageError, match=r"not found \(no _SUCCESS marker"):
        store.download_prefix("models/half", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert store.list(".staging") == []  # the staging upload was cleaned up


def test_json_exists_list_delete(store):
    store.put_json("registry/index.json", {"b": [1, 2], "a": "字"})
    assert store.get_json("registry/index.json") == {"a": "字", "b": [1, 2]}
    assert store.exists("registry/index.json") and not store.exists("registry/nope.json")
    assert store.list("registry") == ["registry/index.json"]
    assert store.list("regist") == []  # prefixes are folders, not string prefixes
    assert store.delete_prefix("registry") == 1
    assert store.list() == []
    with pytest.raises(StorageError, match="no such object"):
        store.get_json("registry/index.json")


@pytest.mark.parametrize("key", ["../etc/passwd", "a//b", "a/./b", ""])
def test_bad_keys_are_rejected(store, key, tmp_path):
    (tmp_path / "x").write_text("x")
    with pytest.raises(StorageError, match="invalid store key"):
        store.put_file(tmp_path / "x", key)


def test_download_refuses_non_empty_destination(store, tree, tmp_path):
    store.put_dir(tree, "m")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(StorageError, match="exists and is not empty"):
        store.download_prefix("m", dest)
    store.download_prefix("m", dest, overwrite=True)
    assert sha256_tree(dest) == sha256_tree(tree)


def test_reserved_marker_name_in_local_dir(store, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / MARKER).write_text("")
    with pytest.raises(StorageError, match="reserves"):
        store.put_dir(tmp_path / "d", "x")


# --- configuration ------------------------------------------------------------------------

def _env(server, **extra):
    env = {"CHAROPS_S3_ENDPOINT": server["url"], "AWS_ACCESS_KEY_ID": server["access_key"],
           "AWS_SECRET_ACCESS_KEY": server["secret_key"], "CHAROPS_STORE_CONFIG": "/nonexistent-ok"}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def test_open_store_from_env(s3_server, s3_bucket):
    env = _env(s3_server, CHAROPS_STORE=f"s3://{s3_bucket}/team/a", CHAROPS_STORE_CONFIG=None,
               HOME="/nonexistent")
    store = open_store(env=env)
    assert isinstance(store, S3Store)
    assert (store.endpoint, store.bucket, store.prefix, store.secure) == (s3_server["endpoint"], s3_bucket, "team/a", False)
    store.put_json("x.json", [1])
    assert s3_server["client"]().stat_object(s3_bucket, "team/a/x.json").size == 4


def test_wrong_credentials_are_a_one_line_error(s3_server, s3_bucket):
    env = _env(s3_server, CHAROPS_STORE=f"s3://{s3_bucket}", AWS_SECRET_ACCESS_KEY="wrong",
               CHAROPS_STORE_CONFIG=None, HOME="/nonexistent")
    with pytest.raises(StorageError) as exc:
        open_store(env=env)
    msg = str(exc.value)
    assert f"S3 endpoint {s3_server['url']} rejected the credentials" in msg
    assert "AWS_ACCESS_KEY_ID" in msg and "\n" not in msg


def test_missing_bucket(s3_server):
    env = _env(s3_server, CHAROPS_STORE_CONFIG=None, HOME="/nonexistent")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-x' does not exist"):
        open_store("s3://no-such-bucket-x", env=env)


def test_unreachable_endpoint_is_a_one_line_error():
    from conftest import _free_ports

    port = _free_ports(1)[0]  # nothing listens there
    env = {"CHAROPS_S3_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "a",
           "AWS_SECRET_ACCESS_KEY": "b", "HOME": "/nonexistent"}
    start = time.monotonic()
    with pytest.raises(StorageError) as exc:
        open_store("s3://bucket-x", env=env)
    assert str(exc.value).startswith(f"cannot reach S3 endpoint http://127.0.0.1:{port}: connection refused")
    assert time.monotonic() - start < 10


def test_credentials_from_mounted_secret_and_config_file(s3_server, s3_bucket, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "accesskey").write_text(s3_server["access_key"] + "\n")
    (secret / "secretkey").write_text(s3_server["secret_key"])
    env = {"CHAROPS_S3_SECRET_DIR": str(secret), "CHAROPS_S3_ENDPOINT": s3_server["endpoint"],
           "CHAROPS_S3_SECURE": "false", "HOME": "/nonexistent"}
    store = open_store(f"s3://{s3_bucket}", env=env)
    assert store.credentials_source == f"secret files in {secret}"
    cfg = tmp_path / "store.yaml"
    cfg.write_text(f"url: s3://{s3_bucket}/p\nendpoint: {s3_server['url']}\n"
                   f"access_key: {s3_server['access_key']}\nsecret_key: {s3_server['secret_key']}\n")
    store = open_store(env={"CHAROPS_STORE_CONFIG": str(cfg)})
    assert (store.bucket, store.prefix, store.secure) == (s3_bucket, "p", False)
    assert store.credentials_source == f"store config {cfg}"
    (secret / "secretkey").unlink()
    with pytest.raises(StorageError, match="lacks 'secretkey'"):
        open_store(f"s3://{s3_bucket}", env=env)


def test_in_cluster_defaults_to_kfp_store(tmp_path):
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "AWS_ACCESS_KEY_ID": "minio",
           "AWS_SECRET_ACCESS_KEY": "minio123", "HOME": str(tmp_path)}
    store = open_store(env=env, check=False)
    assert (store.endpoint, store.bucket, store.prefix, store.secure) == \
        ("minio-service.kubeflow:9000", "mlpipeline", "charops", False)
    with pytest.raises(StorageError, match="mount secret 'mlpipeline-minio-artifact'"):
        open_store(env={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOME": str(tmp_path)}, check=False)


def test_local_defaults_and_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store(env={"HOME": str(tmp_path)})
    assert isinstance(store, LocalStore) and store.root == tmp_path / ".charops" / "store"
    assert open_store(f"file://{tmp_path}/s", env={}).root == tmp_path / "s"
    assert open_store("rel/dir", env={}).root == tmp_path / "rel" / "dir"
    assert open_store(env={"CHAROPS_STORE": str(tmp_path / "e")}).root == tmp_path / "e"


@pytest.mark.parametrize("env, message", [
    ({"CHAROPS_STORE": "gs://b/p"}, "use s3://BUCKET"),
    ({"CHAROPS_STORE": "s3://bucket-a"}, "needs an S3 endpoint: set CHAROPS_S3_ENDPOINT"),
    ({"CHAROPS_STORE": "s3://bucket-a", "CHAROPS_S3_ENDPOINT": "h:1"}, "no S3 credentials"),
    ({"CHAROPS_STORE": "s3://bucket-a", "CHAROPS_S3_ENDPOINT": "ftp://h:1"}, "expected host:port"),
    ({"CHAROPS_STORE": "s3://A_B", "CHAROPS_S3_ENDPOINT": "h:1", "AWS_ACCESS_KEY_ID": "a",
      "AWS_SECRET_ACCESS_KEY": "b"}, "invalid S3 bucket name 'A_B'"),
    ({"CHAROPS_STORE": "s3://bucket-a", "CHAROPS_S3_ENDPOINT": "h:1", "CHAROPS_S3_SECURE": "maybe",
      "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}, "CHAROPS_S3_SECURE: expected true or false"),
])
def test_bad_configuration(env, message, tmp_path):
    with pytest.raises(StorageError, match=message.replace("(", r"\(")):
        open_store(env={"HOME": str(tmp_path), **env}, check=False)


def test_bad_config_file(tmp_path):
    cfg = tmp_path / "store.yaml"
    cfg.write_text("url: s3://b\nendpont: x\n")
    with pytest.raises(StorageError, match=f"{cfg}: unknown key 'endpont'"):
        open_store(env={"CHAROPS_STORE_CONFIG": str(cfg)})
    with pytest.raises(StorageError, match="no such store config"):
        open_store(env={"CHAROPS_STORE_CONFIG": str(tmp_path / "missing.yaml")})


# --- charops store --------------------------------------------------------------------------

def test_cli_store_put_ls_get(s3_server, s3_bucket, tree, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from charops.cli.main import app

    for key, value in _env(s3_server, CHAROPS_STORE=f"s3://{s3_bucket}/cli",
                           CHAROPS_STORE_CONFIG=None).items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    result = runner.invoke(app, ["store", "put", str(tree), "models/m", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"] == 42
    result = runner.invoke(app, ["store", "ls", "models"])
    assert "models/m/_SUCCESS" in result.stdout.splitlines()
    result = runner.invoke(app, ["store", "get", "models/m", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sha256_tree(tmp_path / "out") == sha256_tree(tree)
    result = runner.invoke(app, ["store", "get", "models/m/weights/model.safetensors", str(tmp_path / "w.bin")])
    assert result.exit_code == 0 and sha256_file(tmp_path / "w.bin") == sha256_file(tree / "weights/model.safetensors")
    # A user error is one line on stderr with a non-zero exit.
    result = runner.invoke(app, ["store", "get", "models/none", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: s3://{s3_bucket}/cli/models/none: no such object"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    result = runner.invoke(app, ["store", "ls"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "rejected the credentials from env AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in result.stderr
