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


# --- check_output: the one output-path guard (issue 14) -----------------------------------------

def test_check_output_refuses_outputs_overlapping_an_input(tmp_path):
    from charops.errors import CharopsError, DataError
    from charops.io import check_output

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "in.jsonl").write_text("{}\n")
    link = tmp_path / "link"
    link.symlink_to(data)
    for out in (data, data / "sub" / "out", tmp_path, link, link / "x"):
        with pytest.raises(DataError, match=r"overlaps the input .*choose another --out$"):
            check_output(out, inputs={"the input": data}, option="--out", error=DataError)
    # overwrite never allows an overlap; a file input is guarded the same way
    with pytest.raises(CharopsError, match="overlaps an input"):
        check_output(data / "in.jsonl", inputs=[("an input", data / "in.jsonl")], overwrite=True,
                     directory=False)
    # inputs that do not exist (an s3:// URL, a typo) are not local paths to protect
    assert check_output(tmp_path / "new", inputs={"the input": "s3://b/k", "the other": None}) == \
        tmp_path / "new"


def test_check_output_refuses_what_is_there_unless_overwrite(tmp_path):
    from charops.errors import CharopsError
    from charops.io import check_output

    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "f.json").write_text("{}")
    with pytest.raises(CharopsError, match=r"^output directory '.*full' exists and is not empty; "
                                          r"pass overwrite=true or choose another output_dir$"):
        check_output(full, option="output_dir", overwrite_hint="pass overwrite=true")
    with pytest.raises(CharopsError, match="exists and is not empty; choose another --output$"):
        check_output(full, overwrite_hint=None)
    with pytest.raises(CharopsError, match="f.json' exists and is not empty"):  # a file where a dir goes
        check_output(tmp_path / "f.json")
    assert check_output(full, overwrite=True) == full
    assert check_output(tmp_path / "empty") == tmp_path / "empty"
    # a file output
    with pytest.raises(CharopsError, match=r"output file '.*f.json' exists; pass --overwrite"):
        check_output(tmp_path / "f.json", directory=False)
    with pytest.raises(CharopsError, match="is a directory: give a file name"):
        check_output(full, directory=False, overwrite=True)
    assert check_output(tmp_path / "f.json", directory=False, overwrite=True) == tmp_path / "f.json"
