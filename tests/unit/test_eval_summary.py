"""The one eval_summary.json reader, and every consumer going through it.

    .venv/bin/python -m pytest tests/unit/test_eval_summary.py -x -q

Before it, the reports checked the exact schema, the promotion gate the prefix only, the model
card nothing and the human import plain ``json.loads``; a summary of another version or shape
reached each differently (or as a traceback).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from typer.testing import CliRunner

from charops.cli.main import app
from charops.errors import DataError
from charops.eval.summary import SCHEMA, check_eval_summary, load_results, read_eval_summary

RESULTS = Path(__file__).parent / "eval_fixtures" / "results"

# (file content, words the error must name); None content: a directory.
BAD = {
    "directory": (None, "is a directory"),
    "binary": (b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "not UTF-8"),
    "not JSON": (b"{not json", "not valid JSON"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "array": (b"[1, 2]", "not an eval summary (a JSON list"),
    "no schema": (b"{}", "not an eval summary (an object without 'schema'"),
    "other version": (json.dumps({"schema": "charops.eval_summary/v2"}).encode(),
                      "version 'charops.eval_summary/v2' is not one this charops reads"),
    "other schema": (json.dumps({"schema": "other"}).encode(), "schema is 'other'"),
    "wrong shape": (json.dumps({"schema": SCHEMA, "pairwise": [1]}).encode(),
                    "field 'pairwise' is a JSON list, expected an object"),
}


def _write(path: Path, content: bytes | None) -> Path:
    if content is None:
        path.mkdir(parents=True)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_read_eval_summary_names_the_file_and_what_is_wrong(tmp_path, case):
    content, words = BAD[case]
    path = _write(tmp_path / "eval_summary.json", content)
    with pytest.raises(DataError) as err:
        read_eval_summary(path)
    message = str(err.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


def test_read_eval_summary_missing_and_good(tmp_path):
    with pytest.raises(DataError, match="no such eval summary"):
        read_eval_summary(tmp_path / "nope.json")
    summary = read_eval_summary(RESULTS / "eval_summary.json")
    assert summary["schema"] == SCHEMA and summary["candidate"]["label"] == "candidate"


def _results_with(tmp_path: Path, content: bytes | None) -> Path:
    root = tmp_path / "results"
    shutil.copytree(RESULTS, root)
    (root / "eval_summary.json").unlink()
    _write(root / "eval_summary.json", content)
    return root


@pytest.mark.parametrize("case", ["other version", "no schema", "wrong shape", "binary", "directory"])
def test_every_reader_refuses_the_same_file_the_same_way(tmp_path, case):
    """Reports, human import, registry card and promotion gate: one check, one message."""
    from charops.eval.human import export_human, import_human
    from charops.registry.card import read_inputs
    from charops.registry.gate import read_eval_summary as gate_reader

    content, words = BAD[case]
    root = _results_with(tmp_path, content)
    path = root / "eval_summary.json"
    messages = []
    for read in (lambda: load_results(root), lambda: gate_reader(path),
                 lambda: read_inputs(tmp_path, root)):
        with pytest.raises(DataError) as err:
            read()
        messages.append(str(err.value))
    # The human import reads the original run's summary for its automatic signals.
    export_human(root, tmp_path / "tasks", tasks=["turing"])
    filled = tmp_path / "ann.jsonl"
    rows = [json.loads(line) for line in (tmp_path / "tasks" / "turing.jsonl").read_text().splitlines()]
    filled.write_text("".join(json.dumps({**r, "author": "human"}) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        import_human(tmp_path / "tasks.key.json", [filled], tmp_path / "human")
    messages.append(str(err.value))
    assert len(set(messages)) == 1 and words in messages[0] and str(path) in messages[0]
    assert not (tmp_path / "human").exists()


@pytest.mark.parametrize("case", ["directory", "binary", "deep", "other version"])
def test_eval_report_cli_is_one_line(tmp_path, case):
    root = _results_with(tmp_path, BAD[case][0])
    assert_one_line_error(CliRunner().invoke(app, ["eval", "report", str(root)]),
                          str(root / "eval_summary.json"), BAD[case][1])


@pytest.mark.parametrize("case", ["directory", "binary", "deep", "other version", "wrong shape"])
def test_promote_eval_summary_is_one_line(tmp_path, monkeypatch, case):
    """Issue 19: ``promote --eval-summary`` given a directory or a binary file was a traceback."""
    from test_cli_models import _publish, _summary

    from charops.storage.local import LocalStore

    store = LocalStore(tmp_path / "store")
    monkeypatch.setenv("CHAROPS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("CHAROPS_ACTOR", "tester")
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    path = _write(tmp_path / "given.json", BAD[case][0])
    assert_one_line_error(CliRunner().invoke(app, ["promote", "chat", "1", "--to", "staging",
                                                   "--eval-summary", str(path)]), str(path), BAD[case][1])


def test_the_writer_and_the_reader_share_the_version():
    from charops.eval import aggregate

    assert aggregate.SCHEMA is SCHEMA
    summary = aggregate.summarize([{"id": "p1", "model": "candidate", "reply": "hi"}], [], [],
                                  judge={"kind": "none"}, automatic={}, skipped=[],
                                  candidate={"label": "candidate", "model": "m"}, baseline=None)
    assert check_eval_summary(summary, "written") is summary  # what the writer writes, the reader reads


def test_promote_checks_the_summary_on_the_card_too(tmp_path, monkeypatch):
    """The gate reads the card's eval_summary when no --eval-summary is given: same check."""
    from test_cli_models import _publish, _summary
    from test_registry_errors import _write_raw

    from charops.storage.local import LocalStore

    store = LocalStore(tmp_path / "store")
    monkeypatch.setenv("CHAROPS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("CHAROPS_ACTOR", "tester")
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    card = store.get_json("models/chat/1/card.json")
    card["eval_summary"]["schema"] = "charops.eval_summary/v9"
    _write_raw(store, "models/chat/1/card.json", json.dumps(card).encode())
    assert_one_line_error(CliRunner().invoke(app, ["promote", "chat", "1", "--to", "production"]),
                          "the card of 'chat' v1: eval_summary", "version 'charops.eval_summary/v9'")
