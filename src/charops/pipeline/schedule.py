"""Recurring runs (KFP "recurring runs", cron) of a compiled pipeline, e.g. the feedback flywheel
once a week with the same parameters a one-off ``charops submit`` would take::

    from charops.pipeline.client import connect
    from charops.pipeline.schedule import create_schedule, list_schedules, delete_schedule
    client = connect("http://localhost:8080")
    s = create_schedule(client, "pipelines/feedback.yaml", "0 3 * * 1", {"feedback_format": "kto"})
    [x["name"] for x in list_schedules(client)]
    delete_schedule(client, s["id"])

KFP reads six-field cron expressions (seconds first); a five-field one (``0 3 * * 1``) is
given a leading ``0`` second. The pipeline version is uploaded first when the server lacks it
(as ``charops submit`` does), so the schedule runs this exact compiled YAML; ``no_catchup``
keeps a paused schedule from running every missed slot when it resumes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from charops.pipeline.client import KfpClient, KfpError, checked_params

_FIELD = re.compile(r"^[0-9*/,?LW#A-Za-z-]+$")


def kfp_cron(expr: str) -> str:
    """A cron expression as KFP wants it (6 fields, seconds first); KfpError if it is not one."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(_FIELD.match(f) for f in fields):
        raise KfpError(f"--cron '{expr}': expected 5 cron fields (minute hour day month weekday, "
                       "e.g. '0 3 * * 1' for Mondays 03:00) or KFP's 6 (seconds first)")
    return " ".join(fields)


def _schedule_dict(r: Any) -> dict:
    trigger = getattr(r, "trigger", None)
    cron = getattr(getattr(trigger, "cron_schedule", None), "cron", None)
    version = getattr(r, "pipeline_version_reference", None)
    return {"id": r.recurring_run_id, "name": r.display_name, "cron": cron,
            "status": str(getattr(r, "status", "") or ""),
            "pipeline_id": getattr(version, "pipeline_id", None),
            "version_id": getattr(version, "pipeline_version_id", None),
            "params": dict(getattr(getattr(r, "runtime_config", None), "parameters", None) or {}),
            "experiment_id": getattr(r, "experiment_id", None)}


def create_schedule(client: KfpClient, yaml_path: str | os.PathLike, cron: str,
                    params: Mapping[str, Any] | None = None, *, experiment: str = "charops",
                    name: str | None = None, max_concurrency: int = 1) -> dict:
    """Upload the pipeline version if needed and create an enabled recurring run of it."""
    spec, params = checked_params(yaml_path, params)
    expr = kfp_cron(cron)
    pipeline_id, version_id, version, uploaded = client.ensure_version(yaml_path)
    experiment_id = client.ensure_experiment(experiment)
    name = name or f"{spec.name} ({expr})"
    with client._api(f"creating recurring run '{name}'"):
        r = client.client.create_recurring_run(
            experiment_id=experiment_id, job_name=name, cron_expression=expr,
            max_concurrency=max_concurrency, no_catchup=True, params=params,
            pipeline_id=pipeline_id, version_id=version_id, enabled=True)
    return {**_schedule_dict(r), "version": version, "uploaded": uploaded}


def list_schedules(client: KfpClient, experiment: str | None = None, limit: int = 100) -> list[dict]:
    experiment_id = client.ensure_experiment(experiment) if experiment else None
    with client._api("listing recurring runs"):
        result = client.client.list_recurring_runs(page_size=limit, experiment_id=experiment_id,
                                                   namespace=client.namespace)
    return [_schedule_dict(r) for r in result.recurring_runs or []]


def delete_schedule(client: KfpClient, schedule_id: str) -> None:
    with client._api(f"deleting recurring run {schedule_id}"):
        client.client.delete_recurring_run(schedule_id)
