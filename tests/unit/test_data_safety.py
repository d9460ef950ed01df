"""No input is ever destroyed by ``data prepare`` / ``data validate`` (issue 7, data loss).

    .venv/bin/python -m pytest tests/unit/test_data_safety.py -x -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from typer.testing import CliRunner

from charops.cli.main import app
from charops.io import read_jsonl, sha256_tree

runner = CliRunner()

RECORDS = [
    {"type": "profile", "name": "小明", "identity": "大学生"},
    {"type": "dialogue", "id": "d1", "character": "小明",
     "turns": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "（笑）你好呀"}]},
    {"type": "dialogue", "id": "d2", "character": "小明",
     "turns": [{"role": "user", "content": "在干嘛"}, {"role": "assistant", "content": "看书呢。"}]},
]


def write_data(root: Path, extra_lines: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in RECORDS] + list(extra_lines)
    (root / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _prepare(model, *args):
    return runner.invoke(app, ["data", "prepare", *map(str, args), "--model", str(model), "-q",
                               "max_seq_len=256", "block_size=16", "validation_fraction=0"])


@pytest.mark.parametrize("where", ["same", "inside", "contains", "symlink"])
def test_prepare_refuses_output_overlapping_an_input(tmp_path, micro_model_dir, where):
    if where == "contains":
        data = write_data(tmp_path / "out" / "raw")
        out = tmp_path / "out"
    else:
        data = write_data(tmp_path / "data")
        out = {"same": data, "inside": data / "prepared"}.get(where, tmp_path / "link")
        if where == "symlink":
            out.symlink_to(data, target_is_directory=True)
    before = sha256_tree(data)
    res = _prepare(micro_model_dir, data, "--out", out, "--overwrite")
    assert_one_line_error(res, "overlaps the input", str(data))
    assert sha256_tree(data) == before and (data / "data.jsonl").is_file()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def test_prepare_refuses_output_that_is_a_file(tmp_path, micro_model_dir):
    data = write_data(tmp_path / "data")
    target = tmp_path / "notes.txt"
    target.write_text("precious")
    res = _prepare(micro_model_dir, data, "--out", target, "--overwrite")
    assert_one_line_error(res, str(target), "is a file")
    assert target.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]


def test_prepare_into_a_sibling_still_works(tmp_path, micro_model_dir):
    data = write_data(tmp_path / "data")
    res = _prepare(micro_model_dir, data, "--out", tmp_path / "data-prepared")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "data-prepared" / "manifest.json").is_file()


def test_validate_refuses_rejects_path_that_is_an_input(tmp_path):
    data = write_data(tmp_path / "data", ("{oops",))
    src = data / "data.jsonl"
    before = src.read_bytes()
    for target in (src, data / ".." / "data" / "data.jsonl"):
        res = runner.invoke(app, ["data", "validate", str(data), "--rejects", str(target)])
        assert_one_line_error(res, "--rejects", "overlaps an input")
        assert src.read_bytes() == before
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    res = runner.invoke(app, ["data", "validate", str(src), "--rejects", str(link)])
    assert_one_line_error(res, "overlaps an input")
    assert src.read_bytes() == before


def test_rejects_written_into_an_input_folder_are_not_read_back(tmp_path):
    data = write_data(tmp_path / "data", ("{oops",))
    args = ["data", "validate", str(data), "--rejects", str(data / "rejects.jsonl"), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert (b["read"], b["accepted"], b["rejected"]) == (a["read"], a["accepted"], a["rejected"]) == (4, 3, 1)
    assert [s["path"] for s in b["sources"]] == [str(data / "data.jsonl")]
    assert b["skipped_files"] == [{"path": str(data / "rejects.jsonl"), "reason": "a charops rejects file"}]
    assert [r["reason"] for r in read_jsonl(data / "rejects.jsonl")] == ["invalid JSON"]


def test_rejects_into_a_directory_is_a_one_line_error(tmp_path):
    data = write_data(tmp_path / "data", ("{oops",))
    res = runner.invoke(app, ["data", "validate", str(data / "data.jsonl"), "--rejects", str(tmp_path)])
    assert_one_line_error(res, "--rejects", str(tmp_path), "is a directory")
    (tmp_path / "afile").write_text("x")
    res = runner.invoke(app, ["data", "validate", str(data / "data.jsonl"), "--rejects",
                              str(tmp_path / "afile" / "r.jsonl")])
    assert_one_line_error(res, "--rejects", "afile")
    assert (tmp_path / "afile").read_text() == "x"


# --- SIGTERM during prepare: a real process, a real signal --------------------------------

_SLOW_PREPARE = """
import sys, time
from pathlib import Path
import charops.data.prepare as prepare
from charops.io import write_jsonl

ready = Path(sys.argv[1])
def slow_write(path, rows):
    n = write_jsonl(path, rows)
    ready.write_text(str(path))  # the temporary dataset directory exists now
    time.sleep(60)
    return n

prepare.write_jsonl = slow_write
prepare.main(sys.argv[2:])
"""


def test_sigterm_during_prepare_leaves_no_temporary_directory(tmp_path, micro_model_dir):
    data = write_data(tmp_path / "data")
    ready = tmp_path / "ready"
    script = tmp_path / "slow_prepare.py"
    script.write_text(_SLOW_PREPARE)
    out = tmp_path / "runs" / "ds"
    proc = subprocess.Popen([sys.executable, str(script), str(ready), f"inputs={data}",
                             f"model={micro_model_dir}", f"output_dir={out}", "progress=false",
                             "max_seq_len=256", "block_size=16", "validation_fraction=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "prepare never reached its writing step"
            time.sleep(0.05)
        tmp_dirs = [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
        assert tmp_dirs, "the dataset is built under a temporary name"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert list(out.parent.iterdir()) == [], "nothing half-written is left behind"
    assert b"Traceback" not in err
