"""Run a compiled pipeline YAML on this machine with ``kfp.local`` (the ``--local`` of submit).

The very file that goes to a Kubeflow cluster is loaded with
``kfp.components.load_component_from_file`` and executed by
``kfp.local.SubprocessRunner(use_venv=False)``: every component runs as a subprocess of the
current Python environment (its ``base_image`` and the kubernetes settings are ignored). Each
run gets a directory ``<runs_dir>/<run name>/`` holding the KFP task folders and ``run.json``
(parameters, status, per-task wall time, where every output artifact is)::

    charops submit pipelines/full.yaml --local
    python -c "from charops.pipeline.local import run_local; print(run_local('pipelines/full.yaml').outputs)"

The task logs stream to stderr (stdout stays free for ``--json``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import re
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from charops.errors import CharopsError
from charops.io import write_json
from charops.pipeline.spec import load_spec, parse_params

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
# The last line of a Python traceback: "charops.errors.ConfigError: ..." / "ValueError: ...".
_EXC_LINE = re.compile(r"^\s*((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.+)$")


@dataclass
class LocalRunResult:
    """What a local run did and where its outputs are."""

    pipeline: str
    version: str | None
    run_name: str
    run_dir: str
    status: str
    seconds: float
    params: dict[str, Any]
    task_seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    metadata: dict[str, dict[str, dict]] = field(default_factory=dict)
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def output(self, task: str, name: str) -> Path:
        """Path of one output artifact, e.g. ``output("evaluate", "results")``."""
        try:
            return Path(self.outputs[task][name])
        except KeyError:
            raise CharopsError(f"run {self.run_name}: task '{task}' has no output '{name}' "
                               f"(tasks: {', '.join(sorted(self.outputs))})") from None


class _Tee(io.TextIOBase):
    """stdout stand-in: forwards to stderr, keeps recent lines and task start/end times."""

    def __init__(self, sink, keep: int = 400):
        self.sink = sink
        self.lines: deque[str] = deque(maxlen=keep)
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.failed: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self.sink.write(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.sink.flush()

    def _line(self, line: str) -> None:
        self.lines.append(line)
        now = time.perf_counter()
        if m := _START.search(line):
            self.started[m.group(1)] = now
        elif m := _END.search(line):
            task = m.group(1)
            self.seconds[task] = now - self.started.get(task, now)
            if m.group(2) != "SUCCESS":
                self.failed.append(task)

    def last_exception(self) -> str | None:
        for line in reversed(self.lines):
            if m := _EXC_LINE.match(line):
                return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"
        return None


def _collect_outputs(run_dir: Path) -> tuple[dict, dict, dict]:
    """(paths, metadata, parameters) of every task's outputs, from kfp.local's task folders.

    kfp.local keeps ``<root>/<pipeline>-<time>/<task>/executor_output.json`` per finished
    task: artifact URIs (local paths) with their metadata (metrics, lineage) and output
    parameters. A Metrics artifact has no file locally; its numbers are its metadata.
    """
    paths: dict[str, dict[str, str]] = {}
    metadata: dict[str, dict[str, dict]] = {}
    parameters: dict[str, dict[str, Any]] = {}
    for out_file in sorted(run_dir.glob("*/*/executor_output.json")):
        task = out_file.parent.name
        data = json.loads(out_file.read_text(encoding="utf-8"))
        for name, entry in (data.get("artifacts") or {}).items():
            artifact = entry["artifacts"][0]
            paths.setdefault(task, {})[name] = artifact["uri"]
            metadata.setdefault(task, {})[name] = artifact.get("metadata") or {}
        if data.get("parameterValues"):
            parameters[task] = data["parameterValues"]
    return paths, metadata, parameters


def default_run_name(pipeline: str) -> str:
    return f"{pipeline}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _without_retries(yaml_text: str) -> str:
    """The pipeline YAML with the tasks' retry policies removed (see ``run_local``)."""
    docs = list(yaml.safe_load_all(yaml_text))
    for task in docs[0]["root"].get("dag", {}).get("tasks", {}).values():
        task.pop("retryPolicy", None)
    return yaml.safe_dump_all(docs, sort_keys=True)


def run_local(yaml_path: str | Path, params: list[str] | tuple[str, ...] = (),
              runs_dir: str | Path = "runs", run_name: str | None = None,
              defaults: dict[str, Any] | None = None, retries: bool = False) -> LocalRunResult:
    """Run ``yaml_path`` under kfp.local; ``params`` are ``k=v`` strings (checked first).

    ``defaults`` fill parameters the user did not give (``charops submit`` passes the
    pipeline version this way); they are ignored for parameters the pipeline does not have.
    The tasks' retry policies are for transient cluster failures (a preempted node, a store
    hiccup) and kfp.local honours them, backoff included; on one machine a failure is almost
    always a real one, so it is reported at once unless ``retries`` is set.
    """
    from kfp import local
    from kfp.components import load_component_from_file, load_component_from_text

    spec = load_spec(yaml_path)
    values = parse_params(spec, list(params))
    for key, value in (defaults or {}).items():
        if key in spec.parameters and key not in values:
            values[key] = value
    run_name = run_name or default_run_name(spec.name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_name):
        raise CharopsError(f"run name '{run_name}': use letters, digits, '.', '_' and '-'")
    run_dir = Path(runs_dir).resolve() / run_name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise CharopsError(f"{run_dir} already exists; choose another --run-name or remove it")
    run_dir.mkdir(parents=True, exist_ok=True)

    if retries:
        pipeline = load_component_from_file(str(yaml_path))
    else:
        pipeline = load_component_from_text(_without_retries(spec.text))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir),
               raise_on_error=True)
    tee = _Tee(sys.stderr)
    status, error = "succeeded", None
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(tee):
            pipeline(**values)
    except RuntimeError as exc:  # kfp.local: "... finished with status FAILURE ..."
        status = "failed"
        task = tee.failed[0] if tee.failed else "?"
        cause = tee.last_exception() or _ANSI.sub("", str(exc))
        error = f"task '{task}' failed: {cause}"
    seconds = time.perf_counter() - t0
    outputs, metadata, parameters = _collect_outputs(run_dir)
    result = LocalRunResult(pipeline=spec.name, version=spec.version, run_name=run_name,
                            run_dir=str(run_dir), status=status, seconds=seconds, params=values,
                            task_seconds=dict(tee.seconds), outputs=outputs, metadata=metadata,
                            parameters=parameters, error=error)
    write_json(run_dir / "run.json", asdict(result))
    return result
