"""Atomic writes and hashing: nothing half-written, equal data gives equal bytes."""

from __future__ import annotations

import pytest

from charops.io import atomic_dir, atomic_open, read_jsonl, sha256_tree, write_json, write_jsonl


def test_atomic_open_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as fh:
            fh.write("new, half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_jsonl_is_canonical_and_round_trips(tmp_path):
    rows = [{"b": 1, "a": "中文"}, {"x": [1, 2]}]
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", [{"a": "中文", "b": 1}, {"x": [1, 2]}])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()[0] == '{"a":"中文","b":1}'
    assert list(read_jsonl(tmp_path / "a.jsonl")) == rows


def test_atomic_dir_publishes_only_complete(tmp_path):
    target = tmp_path / "ds"
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            write_json(tmp / "manifest.json", {"a": 1})
            raise ValueError("failed half-way")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        write_json(tmp / "manifest.json", {"a": 1})
    assert (target / "manifest.json").is_file()
    with pytest.raises(FileExistsError):
        with atomic_dir(target) as tmp:
            write_json(tmp / "manifest.json", {"a": 2})
    with atomic_dir(target, overwrite=True) as tmp:
        write_json(tmp / "manifest.json", {"a": 2})
    assert '"a": 2' in (target / "manifest.json").read_text()


def test_sha256_tree_depends_on_names_and_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("1")
    h1 = sha256_tree(tmp_path / "a")
    (tmp_path / "a" / "x.txt").write_text("2")
    h2 = sha256_tree(tmp_path / "a")
    (tmp_path / "a" / "x.txt").rename(tmp_path / "a" / "y.txt")
    h3 = sha256_tree(tmp_path / "a")
    assert len({h1, h2, h3}) == 3


def test_published_files_are_readable_by_others(tmp_path):
    import stat

    from charops.io import DIR_MODE, FILE_MODE

    write_json(tmp_path / "f.json", {})
    with atomic_dir(tmp_path / "d") as tmp:
        write_json(tmp / "x.json", {})
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == FILE_MODE
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == DIR_MODE
    assert FILE_MODE & 0o044  # group/other read under the usual umask (022)
