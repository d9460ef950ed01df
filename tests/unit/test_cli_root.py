"""The root of the `charops` command: help, version, one-line errors, --debug."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from charops import __version__
from charops.cli.main import app

runner = CliRunner()


def test_help_lists_groups():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "version" in result.output


def test_version_json():
    result = runner.invoke(app, ["version", "--json"])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["charops"] == __version__
    assert info["torch"].startswith("2.")


def test_user_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    # Any command that loads a config goes through charops.config; exercise it via the
    # installed console script so the real entry point's error handling is what is tested.
    code = ("from charops.cli.main import app\n"
            "from charops.config import load_config\n"
            "from dataclasses import dataclass\n"
            "@dataclass\nclass C: pass\n"
            "@app.command('cfg-check')\n"
            "def _c(path: str):\n    load_config(C, path)\n"
            "app()\n")
    proc = subprocess.run([sys.executable, "-c", code, "cfg-check", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ")
    assert "bad.yaml line" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    debug = subprocess.run([sys.executable, "-c", code, "--debug", "cfg-check", str(bad)],
                           capture_output=True, text=True)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr
