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
from charops.io import check_output, write_json
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
    final_model: str | None = None  # the chat model the run made (DPO's output), never the judge

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
    check_output(run_dir, option="--run-name", overwrite_hint="remove it")
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
    result.final_model = final_model(result)
    write_json(run_dir / "run.json", asdict(result))
    return result


# ---------------------------------------------------------------------------------------------
# The last screen of `charops submit --local`: the run's headline, not its paths.


def _task(result: LocalRunResult, base: str) -> str | None:
    """The task named ``base`` in this run: kfp.local names a component used in two branches of
    a condition ``base`` and ``base-2`` (only the branch that ran has outputs)."""
    pattern = re.compile(rf"{re.escape(base)}(-\d+)?")
    found = [t for t in (*result.outputs, *result.parameters) if pattern.fullmatch(t)]
    return sorted(found, key=lambda t: (len(t), t))[0] if found else None


def _eval_summary(result: LocalRunResult) -> dict | None:
    task = _task(result, "evaluate")
    results = result.outputs.get(task or "", {}).get("results")
    path = Path(results) / "eval_summary.json" if results else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def final_model(result: LocalRunResult) -> str | None:
    """The chat model the run made (DPO's output in the full recipe): the model the evaluation
    judged, else the last trained model that is not the reward model (the judge)."""
    summary = _eval_summary(result)
    if summary and (summary.get("candidate") or {}).get("model"):
        return str(summary["candidate"]["model"])
    order = list(result.task_seconds) + [t for t in result.outputs if t not in result.task_seconds]
    trained = [t for t in order if "trained_model" in result.outputs.get(t, {})
               and _task_base(t) != "reward"]
    return result.outputs[trained[-1]]["trained_model"] if trained else None


def _task_base(task: str) -> str:
    return re.sub(r"-\d+$", "", task)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def _pct(x: float) -> str:
    return f"{x:.1f}%"


def sample_replies(results_dir: str | Path, label: str = "candidate", count: int = 3) -> list[dict]:
    """``count`` of the candidate's replies (character, user line, reply): the first reply of
    each character in prompt order, then the next ones where there are fewer characters."""
    path = Path(results_dir) / "replies.jsonl"
    if not path.is_file():
        return []
    from charops.io import read_jsonl

    rows = [r for r in read_jsonl(path) if r.get("model") == label]
    firsts = {}
    for i, r in enumerate(rows):
        firsts.setdefault(r.get("character"), i)
    order = sorted(firsts.values()) + [i for i in range(len(rows)) if i not in set(firsts.values())]
    out = []
    for i in order[:count]:
        r = rows[i]
        user = next((m["content"] for m in reversed(r.get("messages") or []) if m["role"] == "user"), "")
        out.append({"character": r.get("character"), "user": user, "reply": r.get("reply", "")})
    return out


def judge_line(judge: dict) -> str:
    """Which judge gave the verdict and how far it can be trusted (its held-out pair accuracy)."""
    from charops.eval.sections import WEAK_JUDGE as JUDGE_TRUST

    kind = judge.get("kind", "?")
    if kind == "reward_model":
        acc, pairs = judge.get("pair_accuracy"), judge.get("pairs")
        if acc is None:
            return "judge: reward model (no held-out pair accuracy recorded)"
        text = f"judge: reward model, held-out pair accuracy {acc:.0%} on {pairs} pairs"
        if acc < JUDGE_TRUST:
            text += f" -- TOO WEAK TO TRUST (below {JUDGE_TRUST:.0%}): read the verdict as noise"
        return text
    if kind == "openai":
        return f"judge: LLM {judge.get('model')} (rubric {judge.get('rubric')})"
    return f"judge: {kind}"


def run_headline(result: LocalRunResult) -> list[str]:
    """The last lines of a local run: time, validation loss and the judged comparison against
    the base model, the gate's verdict and the stage it led to, three sample replies and the
    next two commands. Every path stays in run.json (and ``--verbose``)."""
    lines = [f"run {result.run_name}: {result.status} in {_duration(result.seconds)} "
             f"(pipeline {result.pipeline} {result.version or 'unversioned'})"]
    if result.status != "succeeded":
        return lines
    ev = _task(result, "evaluate")
    numbers = result.metadata.get(ev or "", {}).get("metrics") or {}
    summary = _eval_summary(result) or {}
    base = _baseline_name(result, summary)
    if "loss" in numbers:
        line = f"validation loss {numbers['loss']:.3f}"
        if "baseline_loss" in numbers:
            line += f" vs {numbers['baseline_loss']:.3f} for {base}"
        lines.append(line)
    pair = (summary.get("pairwise") or {}).get("overall")
    judge = summary.get("judge") or {}
    if pair:
        lo, hi = pair.get("advantage_ci95") or (None, None)
        ci = f", 95% CI {lo:+.1f}..{hi:+.1f}" if lo is not None else ""
        lines.append(f"vs {base} on {int(pair['n'])} held-out prompts: "
                     f"win {_pct(pair['win'])} tie {_pct(pair['tie'])} lose {_pct(pair['lose'])}, "
                     f"Advantage {pair['advantage']:+.1f}{ci}, sign test p={pair['sign_test_p']:.3g}")
        lines.append("  " + judge_line(judge))
    elif summary:
        lines.append(f"no judged comparison ({judge_line(judge)})")
    reg = _task(result, "register")
    registered = result.parameters.get(reg or "") or {}
    name = str(summary.get("config", {}).get("model_name") or result.params.get("model_name") or "")
    version = registered.get("version")
    version = int(version) if isinstance(version, (int, float)) else version
    gate_task = _task(result, "promotion-gate")
    gate = result.metadata.get(gate_task or "", {}).get("report")
    promoted = _task(result, "promote") in result.outputs
    stage = None
    if gate:
        to = gate.get("to", "production")
        if gate.get("passed"):
            stage = to if promoted else None
            lines.append(f"gate: passes against {gate.get('reference') or 'the reference'} -> "
                         f"{name} v{version} is {stage or 'not promoted (promote step did not run)'}")
        else:
            lines.append(f"gate: REFUSES {name} v{version} for {to} "
                         f"(failed: {gate.get('failed') or '?'}); it stays registered, unpromoted")
    elif version is not None:
        lines.append(f"registered {name} v{version} (no promotion asked: --param promote_to=production)")
    samples = sample_replies(result.outputs[ev]["results"]) if ev and "results" in result.outputs.get(ev, {}) else []
    if samples:
        lines.append("sample replies:")
        for s in samples:
            reply = " ".join(s["reply"].split())
            lines.append(f"  {s['character']} <- {s['user']}")
            lines.append(f"      {reply[:240] + ('...' if len(reply) > 240 else '')}")
    character = samples[0]["character"] if samples else None
    who = f" --character {_quote(character)}" if character else ""
    if gate and not gate.get("passed"):
        lines.append("to promote it anyway (recorded as forced):")
        lines.append(f"  {gate.get('override')}")
        if version is not None and name:
            lines.append(f"or try it unpromoted: charops deploy {name} --local --version {version}")
            lines.append(f"  then: charops chat --endpoint http://127.0.0.1:8080{who}")
    elif name and version is not None:
        deploy = f"charops deploy {name} --local" + ("" if stage == "production" else f" --version {version}")
        lines.append("next:")
        lines.append(f"  {deploy}")
        lines.append(f"  charops chat --endpoint http://127.0.0.1:8080{who}")
    lines.append(f"details (every path, each step's time and log): {Path(result.run_dir) / 'run.json'}")
    return lines


def _baseline_name(result: LocalRunResult, summary: dict) -> str:
    """"the base model NAME" when the evaluation's baseline is the run's own base model (what
    eval_baseline=given compares with), else "production" (eval_baseline=production found one)."""
    baseline = str((summary.get("baseline") or {}).get("model") or "")
    task = _task(result, "base-model")
    base_dir = result.outputs.get(task or "", {}).get("model")
    if not baseline or (base_dir and Path(baseline).resolve() == Path(base_dir).resolve()):
        return f"the base model {result.params.get('base_model', '')}".rstrip()
    return f"the production model ({baseline})"


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def run_paths(result: LocalRunResult) -> list[str]:
    """Where everything is (``--verbose``): each task's files and log, then the final model."""
    lines = [f"run directory: {result.run_dir}  (summary: {Path(result.run_dir) / 'run.json'})"]
    order = list(result.task_seconds) + [t for t in result.outputs if t not in result.task_seconds]
    for task in order:
        secs = result.task_seconds.get(task)
        lines.append(f"  {task}" + (f"  [{secs:.1f}s]" if secs is not None else ""))
        for name, path in result.outputs.get(task, {}).items():
            if Path(path).exists():  # a Metrics artifact has no file locally
                lines.append(f"    {name:<14} {path}")
        if task in result.logs:
            lines.append(f"    {'(log)':<14} {result.logs[task]}")
    model = final_model(result)
    if model:
        lines.append(f"final model: {model}")
    return lines
