"""``charops data validate`` through the real root app (typer's CliRunner).

    .venv/bin/python -m pytest tests/unit/test_cli_data_validate.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from charops.cli.main import app
from charops.io import read_jsonl

runner = CliRunner()

GOOD = [
    {"name": "林小满", "gender": "女"},
    {"id": "d1", "character": "林小满",
     "turns": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "（笑）你好呀"}]},
]


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                    encoding="utf-8")
    return path


def test_clean_data_exits_zero(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", GOOD)
    res = runner.invoke(app, ["data", "validate", str(f)])
    assert res.exit_code == 0, res.output
    assert "read 2  accepted 2  rejected 0" in res.output
    assert "accepted: 1 profile, 1 dialogue, 0 preference, 0 document" in res.output
    assert f"{f}  [native]  read 2  accepted 2  rejected 0" in res.output


def test_rejects_are_reported_and_written(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", [*GOOD, "{oops", {"foo": 1}, "{oops"])
    out = tmp_path / "rejects.jsonl"
    res = runner.invoke(app, ["data", "validate", str(f), "--rejects", str(out)])
    assert res.exit_code == 0, res.output  # something was accepted and not --strict
    assert "read 5  accepted 2  rejected 3" in res.output
    assert "     2  invalid JSON" in res.output and "     1  unknown record type" in res.output
    rows = list(read_jsonl(out))
    assert [(r["location"], r["reason"]) for r in rows] == [
        ("line 3", "invalid JSON"), ("line 4", "unknown record type"), ("line 5", "invalid JSON")]


def test_strict_fails_on_any_reject(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", [*GOOD, "{oops"])
    res = runner.invoke(app, ["data", "validate", str(f), "--strict"])
    assert res.exit_code == 2
    assert "error: 1 of 3 records rejected (--strict)" in res.output
    clean = jsonl(tmp_path / "b.jsonl", GOOD)
    assert runner.invoke(app, ["data", "validate", str(clean), "--strict"]).exit_code == 0


def test_nothing_accepted_fails(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", ["{oops"])
    res = runner.invoke(app, ["data", "validate", str(f)])
    assert res.exit_code == 2
    assert "error: no record accepted from" in res.output and "Traceback" not in res.output


def test_json_summary(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", [*GOOD, GOOD[1] | {"id": "d2"},
                                     GOOD[1] | {"id": "d3", "character": "无名氏"}, "{oops"])
    res = runner.invoke(app, ["data", "validate", str(f), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert (s["read"], s["accepted"], s["rejected"]) == (5, 3, 2)
    assert s["rejected_by_reason"] == {"exact duplicate": 1, "invalid JSON": 1}
    assert s["duplicates_dropped"]["dialogue"] == 1
    assert s["characters_without_profile"] == ["无名氏"]
    assert s["sources"][0]["path"] == str(f)


def test_format_and_character_options(tmp_path):
    f = jsonl(tmp_path / "chats.jsonl", [{"messages": GOOD[1]["turns"]}])
    res = runner.invoke(app, ["data", "validate", str(f), "--json"])
    assert res.exit_code == 2
    assert json.loads(res.stdout)["rejected_by_reason"] == {
        "no character: add a 'character' field or pass --character NAME": 1}
    res = runner.invoke(app, ["data", "validate", str(f), "--format", "messages", "--character", "林小满", "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["accepted_by_type"]["dialogue"] == 1 and s["sources"][0]["format"] == "messages"
    res = runner.invoke(app, ["data", "validate", str(f), "--format", "csv"])
    assert res.exit_code == 2 and "Invalid value" in res.output


def test_missing_path_is_one_line_error(tmp_path):
    res = runner.invoke(app, ["data", "validate", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file or directory"
    assert "Traceback" not in res.output
