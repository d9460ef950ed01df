"""Run a compiled pipeline YAML on this machine with ``kfp.local`` (the ``--local`` of submit).

The very file that goes to a Kubeflow cluster is loaded with
``kfp.components.load_component_from_file`` and executed by
``kfp.local.SubprocessRunner(use_venv=False)``: every component runs as a subprocess of the
current Python environment (its ``base_image`` and the kubernetes settings are ignored). Each
run gets a directory ``<runs_dir>/<run name>/`` holding the KFP task folders and ``run.json``
(parameters, status, per-task wall time, where every output artifact is and each step's log)::

    charops submit pipelines/full.yaml --local             # one line per step; logs in runs/<run>/logs/
    charops submit pipelines/full.yaml --local --verbose   # the steps' full output as well
    python -c "from charops.pipeline.local import run_local; print(run_local('pipelines/full.yaml').outputs)"

    runs/<run>/run.json            the summary (LocalRunResult)
    runs/<run>/logs/<step>.log     everything the step printed (executor input, progress, errors)
    runs/<run>/logs/pipeline.log   kfp.local's own lines before the first step
    runs/<run>/<pipeline>-<time>/<step>/   the step's output artifacts (kfp.local's layout)

The live view and ``--verbose`` output go to stderr (stdout stays free for ``--json``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from charops.errors import CharopsError
from charops.io import write_json
from charops.pipeline.spec import load_spec, parse_params

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
# The last line of a Python traceback: "charops.errors.ConfigError: ..." / "ValueError: ...".
# The stages' progress line on stderr (charops.train.recorder): "step 3/20 loss=2.3456 ...".
_STEP = re.compile(r"\bstep \d+/\d+ loss=\S+")
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
    logs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    failed_task: str | None = None

    def output(self, task: str, name: str) -> Path:
        """Path of one output artifact, e.g. ``output("evaluate", "results")``."""
        try:
            return Path(self.outputs[task][name])
        except KeyError:
            raise CharopsError(f"run {self.run_name}: task '{task}' has no output '{name}' "
                               f"(tasks: {', '.join(sorted(self.outputs))})") from None


class RunLog(io.TextIOBase):
    """stdout stand-in during a run: each line into its step's log file, step start/end times.

    kfp.local prints everything on stdout: its own records, then each task's streamed output
    (stdout and stderr of the component's subprocess: executor input JSON, progress bars, the
    stage's step lines). A step's lines go to ``<log_dir>/<step>.log`` (kfp.local runs one step
    at a time), lines before the first step to ``pipeline.log``. ``echo`` (``--verbose``) also
    gets every line as it comes; ``view`` is told when a step starts, prints a step line
    (``step 3/20 loss=...``) and ends.
    """

    def __init__(self, log_dir: Path, echo: TextIO | None = None, view: LiveView | None = None, keep: int = 400):
        self.log_dir = log_dir
        self.echo = echo
        self.view = view
        self.lines: deque[str] = deque(maxlen=keep)
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.failed: list[str] = []
        self.logs: dict[str, str] = {}
        self._current = "pipeline"
        self._files: dict[str, TextIO] = {}
        self._partial = ""
        log_dir.mkdir(parents=True, exist_ok=True)

    def write(self, text: str) -> int:
        if self.echo is not None:
            self.echo.write(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        if self.echo is not None:
            self.echo.flush()
        for fh in self._files.values():
            fh.flush()

    def close(self) -> None:
        if self._partial:
            self._line(_ANSI.sub("", self._partial))
            self._partial = ""
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    def _file(self, task: str) -> TextIO:
        if task not in self._files:
            path = self.log_dir / f"{task}.log"
            self._files[task] = open(path, "a", encoding="utf-8")  # a retried step appends
            self.logs[task] = str(path)
        return self._files[task]

    def _line(self, line: str) -> None:
        self.lines.append(line)
        now = time.perf_counter()
        if m := _START.search(line):
            self._current = m.group(1)
            self.started[self._current] = now
            if self.view is not None:
                self.view.started(self._current)
        self._file(self._current).write(line + "\n")
        if m := _END.search(line):
            task = m.group(1)
            self.seconds[task] = now - self.started.get(task, now)
            if m.group(2) != "SUCCESS":
                self.failed.append(task)
            if self.view is not None:
                ok = m.group(2) == "SUCCESS"
                self.view.ended(task, ok, self.seconds[task], "" if ok else self.last_exception() or "")
        elif self.view is not None and (m := _STEP.search(line)):
            self.view.progress(self._current, m.group(0))

    def last_exception(self) -> str | None:
        for line in reversed(self.lines):
            if m := _EXC_LINE.match(line):
                return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"
        return None


class LiveView:
    """The compact view of ``charops submit --local``: one line per step (state, seconds, headline).

    On a terminal the running step's line is rewritten in place with its latest training step;
    elsewhere (CI logs, pipes) a line is printed when a step ends. ``headline(task)`` gives the
    step's headline number, read from its outputs once it has ended.
    """

    def __init__(self, out: TextIO, headline: Callable[[str], str] | None = None, tty: bool | None = None):
        self.out = out
        self.headline = headline or (lambda task: "")
        self.tty = out.isatty() if tty is None else tty
        self.width = 0

    def _show(self, text: str, final: bool) -> None:
        if self.tty:
            self.out.write("\r\x1b[K" + text + ("\n" if final else ""))
        elif final:
            self.out.write(text + "\n")
        self.out.flush()

    def _row(self, task: str, state: str, rest: str = "") -> str:
        self.width = max(self.width, len(task), 12)
        return f"  {task:<{self.width}}  {state:<9} {rest}".rstrip()

    def started(self, task: str) -> None:
        self._show(self._row(task, "running"), final=False)

    def progress(self, task: str, step_line: str) -> None:
        self._show(self._row(task, "running", step_line), final=False)

    def ended(self, task: str, ok: bool, seconds: float, error: str = "") -> None:
        note = self.headline(task) if ok else error
        self._show(self._row(task, "succeeded" if ok else "failed", f"{seconds:7.1f}s  {note}"), final=True)


# Per step, the first number found among its outputs (metrics first) is its headline.
HEADLINE_KEYS = (("final_loss", "loss"), ("loss", "loss"), ("counts.accepted", "records"),
                 ("version", "version"), ("sha256", "sha256"))


def headline(executor_output: dict) -> str:
    """``loss 2.345`` / ``records 230`` / ``version 3``: a step's headline from its executor output."""
    found: dict[str, Any] = {}
    artifacts = sorted((executor_output.get("artifacts") or {}).items(), key=lambda kv: kv[0] != "metrics")
    for _, entry in artifacts:
        for key, value in (entry["artifacts"][0].get("metadata") or {}).items():
            found.setdefault(key, value)
    for key, value in (executor_output.get("parameterValues") or {}).items():
        found.setdefault(key, value)
    for key, label in HEADLINE_KEYS:
        value = found.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):  # kfp.local turns ints into floats (7 -> 7.0)
            text = str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"
            return f"{label} {text}"
        if isinstance(value, str) and value:
            return f"{label} {value[:12]}"
    return ""


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


def task_headline(run_dir: Path, task: str) -> str:
    """The headline of a finished step of the run in ``run_dir`` ("" when it has none)."""
    found = sorted(run_dir.glob(f"*/{task}/executor_output.json"))
    return headline(json.loads(found[-1].read_text(encoding="utf-8"))) if found else ""


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
              defaults: dict[str, Any] | None = None, retries: bool = False,
              echo: TextIO | None = None, live: TextIO | None = None) -> LocalRunResult:
    """Run ``yaml_path`` under kfp.local; ``params`` are ``k=v`` strings (checked first).

    Each step's full output goes to ``<run dir>/logs/<step>.log``; ``echo`` also gets all of it
    as it comes (``--verbose``), ``live`` a compact view, one line per step (``LiveView``).

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
    view = None
    if live is not None:
        live.write(f"run {run_name}: {spec.name} {spec.version or 'unversioned'}, "
                   f"step logs in {run_dir / 'logs'}/\n")
        view = LiveView(live, lambda task: task_headline(run_dir, task))
    log = RunLog(run_dir / "logs", echo=echo, view=view)
    status, error, failed_task = "succeeded", None, None
    t0 = time.perf_counter()
    try:
        # kfp.local's warnings (ignored image and resources, once per step) go to stderr: log them too.
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            pipeline(**values)
    except RuntimeError as exc:  # kfp.local: "... finished with status FAILURE ..."
        status = "failed"
        task = failed_task = log.failed[0] if log.failed else "?"
        cause = log.last_exception() or _ANSI.sub("", str(exc))
        error = f"task '{task}' failed: {cause}"
    finally:
        log.close()
    seconds = time.perf_counter() - t0
    outputs, metadata, parameters = _collect_outputs(run_dir)
    result = LocalRunResult(pipeline=spec.name, version=spec.version, run_name=run_name,
                            run_dir=str(run_dir), status=status, seconds=seconds, params=values,
                            task_seconds=dict(log.seconds), outputs=outputs, metadata=metadata,
                            parameters=parameters, logs=dict(log.logs), error=error,
                            failed_task=failed_task)
    write_json(run_dir / "run.json", asdict(result))
    return result
