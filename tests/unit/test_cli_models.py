"""`charops registry list|show|history` (formerly `charops models`) and `charops promote` on a local registry.

    .venv/bin/python -m pytest tests/unit/test_cli_models.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charops.cli.main import app
from charops.registry import history, production, register
from charops.storage.local import LocalStore

runner = CliRunner()
LINEAGE = {"dataset_sha256": "d" * 64, "base_model": "charops:tiny", "pipeline_version": "v1",
           "run_id": "r1", "run_name": "run-1"}


def _summary(advantage: float, p: float, baseline: str = "runs/base") -> dict:
    dims = {"overall": {"Overall": {"mean": 3.4, "ci95": [3, 4], "n": 30},
                        "Safety": {"mean": 4.1, "ci95": [4, 4], "n": 30}}}
    return {"schema": "charops.eval_summary/v1", "baseline": {"label": "baseline", "model": baseline},
            "judge": {"kind": "reward_model", "model": "rm"},
            "pointwise": {"dimensions": ["Overall", "Safety"], "candidate": dims, "baseline": dims},
            "pairwise": {"overall": {"win": 50.0, "tie": 20.0, "lose": 50.0 - advantage,
                                     "advantage": advantage, "n": 30, "sign_test_p": p}},
            "skipped": []}


def _publish(store: LocalStore, tmp_path: Path, i: int, summary: dict) -> dict:
    model = tmp_path / f"m{i}"
    model.mkdir()
    (model / "config.json").write_text("{}\n")
    (model / "model.safetensors").write_bytes(f"w{i}".encode())
    (model / "characters.jsonl").write_text(json.dumps({"name": f"角色{i}", "category": "daily life"},
                                                       ensure_ascii=False) + "\n")
    reports = tmp_path / f"r{i}"
    reports.mkdir()
    (reports / "eval_summary.json").write_text(json.dumps(summary))
    return register(store, model, "chat", {"model.loss": 2.0}, LINEAGE, reports_dir=reports)


@pytest.fixture
def store(tmp_path, monkeypatch) -> LocalStore:
    monkeypatch.setenv("CHAROPS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("CHAROPS_ACTOR", "tester")
    return LocalStore(tmp_path / "store")


def test_list_show_history_on_an_empty_and_a_filled_registry(tmp_path, store):
    result = runner.invoke(app, ["registry", "list"])
    assert result.exit_code == 0 and "no models registered" in result.output
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    _publish(store, tmp_path, 2, _summary(20, 0.01))
    result = runner.invoke(app, ["registry", "history", "chat"])
    assert result.exit_code == 0 and "no stage changes yet" in result.output

    assert runner.invoke(app, ["promote", "chat", "1", "--to", "production"]).exit_code == 0
    result = runner.invoke(app, ["registry", "list"])
    lines = result.output.splitlines()
    assert result.exit_code == 0 and lines[0].split() == [
        "name", "versions", "latest", "production", "staging", "latest", "created"]
    assert lines[1].split()[:5] == ["chat", "2", "2", "1", "-"]
    listed = json.loads(runner.invoke(app, ["registry", "list", "--json"]).output)
    assert listed[0]["versions"] == [1, 2] and listed[0]["production"] == 1

    result = runner.invoke(app, ["registry", "show", "chat", "production"])
    assert result.exit_code == 0
    assert result.output.startswith("stage: production\n# chat v1\n")
    assert "| 角色1 | daily life |" in result.output
    shown = json.loads(runner.invoke(app, ["registry", "show", "chat", "--json"]).output)
    assert shown["stage"] == "none" and shown["entry"]["version"] == 2
    assert shown["card"]["characters"] == [{"name": "角色2", "category": "daily life"}]

    result = runner.invoke(app, ["registry", "history", "chat"])
    assert result.exit_code == 0
    row = result.output.splitlines()[1].split()
    assert row[0] == "1" and row[2:] == ["promote", "v1", "none->production", "-", "passed",
                                         "tester", "-"]
    events = json.loads(runner.invoke(app, ["registry", "history", "chat", "--json"]).output)
    assert events == history(store, "chat")


def test_promote_refusal_prints_the_table_and_exits_1(tmp_path, store):
    _publish(store, tmp_path, 1, _summary(20, 0.07))
    result = runner.invoke(app, ["promote", "chat", "1", "--to", "production"])
    assert result.exit_code == 1
    assert "chat v1 vs base model charops:tiny: refuses" in result.stdout
    assert any(line.split()[:3] == ["sign-test", "p", "0.07"] and "FAIL" in line
               for line in result.stdout.splitlines())
    assert "not promoted to production" in result.stderr and "--force" in result.stderr
    assert production(store, "chat") is None
    # A looser alpha from the command line lets it through.
    result = runner.invoke(app, ["promote", "chat", "1", "--to", "production", "alpha=0.1"])
    assert result.exit_code == 0, result.output
    assert "chat v1: none -> production (event 1, by tester)" in result.output
    result = runner.invoke(app, ["promote", "chat", "1", "--to", "production"])
    assert result.exit_code == 0 and "is production already" in result.output


def test_force_needs_a_reason_and_is_recorded(tmp_path, store):
    _publish(store, tmp_path, 1, _summary(0, 0.5))
    result = runner.invoke(app, ["promote", "chat", "1", "--to", "staging", "--force"])
    assert result.exit_code == 2 and "needs --reason" in result.stderr
    result = runner.invoke(app, ["promote", "chat", "1", "--to", "staging", "--force",
                                 "--reason", "smoke test", "--actor", "ana", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["promoted"] and out["event"]["force"] and not out["decision"]["passed"]
    event = history(store, "chat")[-1]
    assert (event["actor"], event["reason"], event["force"]) == ("ana", "smoke test", True)
    result = runner.invoke(app, ["registry", "history", "chat"])
    assert "forced" in result.output and "ana" in result.output


@pytest.mark.parametrize("args", [
    ["registry", "show", "Bad_Name"], ["registry", "show", "../etc"], ["registry", "history", "a/b"],
    ["registry", "show", "chat", "../1"], ["registry", "show", "chat", "0"],
    ["promote", "chat", "1/2", "--to", "staging"], ["promote", "chat", "1", "--to", "archived"],
    ["registry", "show", "chat", "staging"], ["registry", "history", "nope"],
])
def test_bad_names_versions_and_stages_are_one_line_errors(tmp_path, store, args):
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_later_evaluation_against_production_can_be_given(tmp_path, store):
    first = _publish(store, tmp_path, 1, _summary(20, 0.01))
    second = _publish(store, tmp_path, 2, _summary(20, 0.01))  # judged against the base model
    assert runner.invoke(app, ["promote", "chat", "1", "--to", "production"]).exit_code == 0
    result = runner.invoke(app, ["promote", "chat", "2", "--to", "production"])
    assert result.exit_code == 1 and "re-evaluate with the production model" in result.stdout

    later = {**_summary(15, 0.02, baseline=first["model_uri"]),
             "candidate": {"label": "candidate", "model": second["model_uri"]}}
    path = tmp_path / "eval_summary.json"
    path.write_text(json.dumps(later))
    wrong = tmp_path / "other.json"
    wrong.write_text(json.dumps({**later, "candidate": {"model": first["model_uri"]}}))
    result = runner.invoke(app, ["promote", "chat", "2", "--to", "production", "--eval-summary", str(wrong)])
    assert result.exit_code == 1 and "the summary evaluated another model" in result.stdout
    result = runner.invoke(app, ["promote", "chat", "2", "--to", "production", "--eval-summary", str(path)])
    assert result.exit_code == 0, result.output
    assert "chat v2 vs production v1: passes" in result.stdout
    assert production(store, "chat")["version"] == 2
    assert "v1 -> archived" in result.stdout

    (tmp_path / "bad.json").write_text("{}")
    result = runner.invoke(app, ["promote", "chat", "1", "--to", "production", "--eval-summary",
                                 str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "not an eval summary" in result.stderr
