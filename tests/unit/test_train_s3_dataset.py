"""`dataset=s3://BUCKET/PREFIX` for the training stages (what the 7B presets show): a published
prepared dataset is downloaded into output_dir/dataset, on a real S3 server (SeaweedFS).

    .venv/bin/python -m pytest tests/unit/test_train_s3_dataset.py -x -q
"""

from __future__ import annotations

import json

import pytest

from charops.config import load_config
from charops.errors import CharopsError, DataError
from charops.io import sha256_tree


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    monkeypatch.setenv("CHAROPS_S3_ENDPOINT", s3_server["url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    monkeypatch.setenv("HOME", "/nonexistent")  # no user store config
    monkeypatch.delenv("CHAROPS_STORE_CONFIG", raising=False)


def test_pretrain_reads_a_published_dataset(tmp_path, micro_model_dir, train_dataset_dir, s3_env, s3_bucket):
    from charops.storage import open_store
    from charops.train.pretrain import PretrainConfig, run

    open_store(f"s3://{s3_bucket}").put_dir(train_dataset_dir, "datasets/d1")
    out = tmp_path / "run"
    summary = run(load_config(PretrainConfig, "tiny-cpu", [
        f"model={micro_model_dir}", f"dataset=s3://{s3_bucket}/datasets/d1/", f"output_dir={out}",
        "max_steps=1", "evaluate=false", "save_steps=100"]))
    assert summary["steps"] == 1 and summary["dataset"]["path"] == str(out / "dataset")
    assert sha256_tree(out / "dataset") == sha256_tree(train_dataset_dir)
    manifest = json.loads((train_dataset_dir / "manifest.json").read_text())
    assert summary["dataset"]["content_sha256"] == manifest["content_sha256"]


def test_fetch_dataset_reuses_a_complete_copy_and_refetches_a_changed_one(tmp_path, train_dataset_dir, s3_env,
                                                                         s3_bucket):
    import shutil

    from charops.storage import open_store
    from charops.train.inputs import fetch_dataset

    store = open_store(f"s3://{s3_bucket}")
    store.put_dir(train_dataset_dir, "datasets/d1")
    dest = fetch_dataset(f"s3://{s3_bucket}/datasets/d1", tmp_path / "dataset")
    (dest / "local-note").write_text("kept")
    fetch_dataset(f"s3://{s3_bucket}/datasets/d1", dest)  # another rank, or a resumed run
    assert (dest / "local-note").read_text() == "kept"

    changed = tmp_path / "changed"
    shutil.copytree(train_dataset_dir, changed)
    manifest = json.loads((changed / "manifest.json").read_text())
    (changed / "manifest.json").write_text(json.dumps({**manifest, "content_sha256": "other"}))
    store.put_dir(changed, "datasets/d2")
    fetch_dataset(f"s3://{s3_bucket}/datasets/d2", dest)
    assert not (dest / "local-note").exists()
    assert json.loads((dest / "manifest.json").read_text())["content_sha256"] == "other"


def test_unpublished_or_unprepared_prefixes_are_refused(tmp_path, train_dataset_dir, s3_env, s3_bucket):
    from charops.storage import open_store
    from charops.train.inputs import fetch_dataset

    with pytest.raises(CharopsError, match="_SUCCESS"):
        fetch_dataset(f"s3://{s3_bucket}/datasets/never", tmp_path / "a")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dialogues.jsonl").write_text("{}\n")
    open_store(f"s3://{s3_bucket}").put_dir(raw, "datasets/raw")
    with pytest.raises(DataError, match="has no manifest.json: not a prepared dataset"):
        fetch_dataset(f"s3://{s3_bucket}/datasets/raw", tmp_path / "b")
    with pytest.raises(DataError, match="expected s3://BUCKET/PREFIX"):
        fetch_dataset(f"s3://{s3_bucket}", tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
