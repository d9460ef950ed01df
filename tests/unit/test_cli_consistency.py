"""Every command takes -q/--quiet and --json where it prints a summary, and -q means errors only
(issue 7): the whole command tree is walked, and the quiet path of each kind of command is run.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/unit/test_cli_consistency.py -x -q
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import typer
from test_cli_models import _publish, _summary, store  # noqa: F401 (store is a fixture)
from typer.testing import CliRunner

from charops.cli.common import JsonOpt, QuietOpt, ServeQuietOpt
from charops.cli.main import app

runner = CliRunner()
RESULTS = Path(__file__).parent / "eval_fixtures" / "results"

# Commands whose output is the answer: -q would leave nothing, so they take --json only.
ANSWERS = {"version", "model inspect", "runs list", "runs get", "store ls", "registry list",
           "registry show", "registry history", "schedule list",
           "models list", "models show", "models history"}  # the hidden old name of `registry`
INTERACTIVE = {"chat"}  # neither --json nor -q; its help says why


def _help(alias) -> str:
    return alias.__metadata__[0].help


def _commands(cmd, path: tuple[str, ...] = ()):
    if hasattr(cmd, "commands"):  # a group (typer vendors its own click: no isinstance)
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def test_every_command_takes_json_and_quiet_by_the_shared_rule():
    commands = dict(_commands(typer.main.get_command(app)))
    assert {"submit", "deploy", "serve", "rollback", "promote", "eval report", "eval export-human",
            "eval import-human", "eval heldout", "train sft"} <= set(commands)  # the walk sees them
    assert ANSWERS | INTERACTIVE <= set(commands)
    for name, cmd in commands.items():
        opts = {o: p for p in cmd.params for o in getattr(p, "opts", [])}
        if name in INTERACTIVE:
            assert "--json" not in opts and "-q" not in opts, name
            assert "neither --json nor -q" in " ".join((cmd.help or "").split()), name
            continue
        assert "--json" in opts and opts["--json"].help == _help(JsonOpt), name
        if name in ANSWERS:
            assert "-q" not in opts, f"{name}: its output is the answer; -q would print nothing"
            continue
        assert "-q" in opts and "--quiet" in opts, f"{name} prints a summary but has no -q"
        want = _help(ServeQuietOpt) if name in ("deploy", "serve", "playground") else _help(QuietOpt)
        assert opts["-q"].help == want, name
    assert "errors only" in _help(QuietOpt) and "progress lines" in _help(QuietOpt)


def test_promote_quiet_prints_nothing_and_a_refusal_is_one_line(tmp_path, store):  # noqa: F811
    _publish(store, tmp_path, 1, _summary(20, 0.01))
    ok = runner.invoke(app, ["promote", "chat", "1", "--to", "production", "-q"])
    assert ok.exit_code == 0 and ok.output == ""
    _publish(store, tmp_path, 2, _summary(20, 0.07))  # p above alpha: refused
    refused = runner.invoke(app, ["promote", "chat", "2", "--to", "production", "-q"])
    assert refused.exit_code == 1 and refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()  # no gate table, and no "table above"
    assert line.startswith("error: chat v2 not promoted") and "run without -q" in line
    loud = runner.invoke(app, ["promote", "chat", "2", "--to", "production"])
    assert loud.exit_code == 1 and "table above" in loud.stderr and loud.stdout.strip()


def test_eval_report_and_human_commands_quiet(tmp_path):
    shutil.copytree(RESULTS, tmp_path / "r")
    res = runner.invoke(app, ["eval", "report", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 0 and res.output == ""
    assert (tmp_path / "r" / "report.md").is_file()
    res = runner.invoke(app, ["eval", "export-human", str(RESULTS), "--out", str(tmp_path / "tasks"),
                              "--task", "pairwise", "-q"])
    assert res.exit_code == 0 and res.output == ""
    assert (tmp_path / "tasks" / "pairwise.csv").is_file()
    with (tmp_path / "tasks" / "pairwise.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (tmp_path / "ann.csv").open("w", encoding="utf-8", newline="") as fh:  # one annotator: "1"
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "preference": "1"} for row in rows)
    res = runner.invoke(app, ["eval", "import-human", str(tmp_path / "tasks.key.json"),
                              str(tmp_path / "ann.csv"), "--out", str(tmp_path / "human"), "-q"])
    assert res.exit_code == 0 and res.output == "", res.output
    assert (tmp_path / "human" / "eval_summary.json").is_file()
    # -q with --json: the JSON and nothing else.
    res = runner.invoke(app, ["eval", "report", str(tmp_path / "r"), "-q", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["headline"]["pairwise_n"] == 5.0


@pytest.mark.slow
def test_train_and_heldout_quiet_print_nothing(tmp_path, micro_model_dir, train_dataset_dir,
                                               eval_dataset_dir):
    res = runner.invoke(app, ["train", "sft", f"model={micro_model_dir}", f"dataset={train_dataset_dir}",
                              "max_steps=2", "save_steps=100", "--output",
                              str(tmp_path / "sft"), "-q"])
    assert res.exit_code == 0, res.output
    assert "step 1/2" not in res.stderr and res.stdout == ""
    assert (tmp_path / "sft" / "model").is_dir()
    loud = runner.invoke(app, ["train", "sft", f"model={micro_model_dir}", f"dataset={train_dataset_dir}",
                               "max_steps=2", "save_steps=100", "--output",
                               str(tmp_path / "sft2")])
    assert loud.exit_code == 0 and "step 1/2" in loud.stderr and "sft: 2 steps" in loud.stdout

    res = runner.invoke(app, ["eval", "heldout", f"model={micro_model_dir}", f"dataset={eval_dataset_dir}",
                              f"output_dir={tmp_path / 'heldout'}", "num_samples=1", "max_new_tokens=5",
                              f"baseline_model={micro_model_dir}", "-q"])
    assert res.exit_code == 0 and res.output == "", res.output
    assert (tmp_path / "heldout" / "metrics.json").is_file()
