"""charops schedule (charops.pipeline.schedule) against the KFP API stand-in of
tests/unit/test_pipeline_client.py, extended with the recurring-run routes.

    .venv/bin/python -m pytest tests/unit/test_schedule.py -x -q

The stand-in is NOT Kubeflow: a small HTTP server on 127.0.0.1 answering the v2beta1 paths
kfp.Client (kfp 2.17) calls; here also ``recurringruns`` (create, list, delete).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charops.cli.main import app
from charops.pipeline.schedule import kfp_cron

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline_client import API, NOW, FakeKfpServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class FakeKfpWithSchedules(FakeKfpServer):
    """The stand-in plus recurring runs (and DELETE)."""

    def __init__(self):
        super().__init__()
        self.recurring: dict[str, dict] = {}
        handler = self.httpd.RequestHandlerClass
        server = self
        handler.do_DELETE = lambda h: server.handle(h, "DELETE")

    def route(self, method, path, query, body, files):
        parts = path.removeprefix(API).strip("/").split("/")
        if parts[0] == "recurringruns":
            if method == "POST":
                r = dict(body, recurring_run_id=uuid.uuid4().hex, status="ENABLED", created_at=NOW)
                self.recurring[r["recurring_run_id"]] = r
                return 200, r
            if method == "GET" and len(parts) == 1:
                found = [r for r in self.recurring.values()
                         if "experiment_id" not in query or r.get("experiment_id") == query["experiment_id"]]
                return 200, {"recurringRuns": found, "total_size": len(found)}
            if method == "DELETE":
                del self.recurring[parts[1]]
                return 200, {}
        return super().route(method, path, query, body, files)


@pytest.fixture
def kfp():
    fake = FakeKfpWithSchedules()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def test_kfp_cron():
    assert kfp_cron("0 3 * * 1") == "0 0 3 * * 1"
    assert kfp_cron("0 0 3 * * 1") == "0 0 3 * * 1"
    for bad in ("every monday", "0 3 * *", "0 3 * * 1; rm -rf /"):
        with pytest.raises(Exception, match="cron"):
            kfp_cron(bad)


def test_schedule_create_list_delete(kfp):
    runner = CliRunner()
    host = ["--host", kfp.url]
    res = runner.invoke(app, ["schedule", "create", str(ROOT / "pipelines" / "feedback.yaml"),
                              "--cron", "0 3 * * 1", "--param", "feedback_format=kto",
                              "--param", "feedback_since=2026-12-01", *host, "--json"])
    assert res.exit_code == 0, res.output
    created = json.loads(res.output)
    sent = kfp.posted("/recurringruns")[0]["body"]
    assert sent["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert sent["runtime_config"]["parameters"]["feedback_format"] == "kto"
    assert sent["runtime_config"]["parameters"]["pipeline_version"].startswith("0.")
    assert sent["no_catchup"] is True and sent["mode"] == "ENABLE"
    assert sent["pipeline_version_reference"]["pipeline_id"] in kfp.pipelines
    assert created["cron"] == "0 0 3 * * 1"

    res = runner.invoke(app, ["schedule", "list", *host, "--json"])
    assert [s["id"] for s in json.loads(res.output)] == [created["id"]]
    res = runner.invoke(app, ["schedule", "delete", created["id"], *host])
    assert res.exit_code == 0 and kfp.recurring == {}
    res = runner.invoke(app, ["schedule", "list", *host])
    assert "no recurring runs" in res.output


def test_schedule_refuses_unknown_parameters_and_bad_cron(kfp):
    runner = CliRunner()
    res = runner.invoke(app, ["schedule", "create", str(ROOT / "pipelines" / "feedback.yaml"),
                              "--cron", "0 3 * * 1", "--param", "nope=1", "--host", kfp.url])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(app, ["schedule", "create", str(ROOT / "pipelines" / "feedback.yaml"),
                              "--cron", "weekly", "--host", kfp.url])
    assert res.exit_code == 2 and "cron" in res.output and "Traceback" not in res.output
    assert kfp.recurring == {}
