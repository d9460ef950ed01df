"""`charops submit` and `charops compile`: run the versioned pipelines here or on Kubeflow.

    charops submit pipelines/full.yaml --local                      # the whole recipe, here
    charops submit pipelines/full.yaml --local --verbose            # ... streaming every step's log
    charops submit pipelines/full.yaml --local --param sft_overrides='["max_steps=20"]'
    charops submit pipelines/full.yaml --host https://kfp.example.com --wait --run-name try1
    charops compile --all            # regenerate pipelines/*.yaml from pipelines/*.py
    charops compile --check          # exit 1 listing stale compiled files
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from charops.cli.common import HostOpt, JsonOpt, NamespaceOpt, QuietOpt, TokenOpt, echo_json
from charops.errors import CharopsError

ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", "-p", help="Pipeline parameter NAME=VALUE (repeatable); lists/objects as JSON.",
    show_default=False)]


def _print_local(result, verbose: bool = False) -> None:
    """The run's headline (charops.pipeline.local.run_headline); with --verbose every path first."""
    from charops.pipeline.local import run_headline, run_paths

    if verbose:
        for line in run_paths(result):
            typer.echo(line)
    for line in run_headline(result):
        typer.echo(line)


def spec_and_params(pipeline: Path, param: list[str] | None, preset: str | None):
    """The compiled pipeline's spec and its ``key=value`` parameters: the run preset's
    (``configs/run/NAME.yaml``) first, ``--param`` after, so ``--param`` wins."""
    from charops.pipeline.spec import load_spec

    spec = load_spec(pipeline)
    if preset:
        from charops.pipeline.presets import with_preset

        param = with_preset(preset, param or [], known=set(spec.parameters))
    return spec, param or []


def submit(
    pipeline: Annotated[Path, typer.Argument(help="Compiled pipeline YAML (pipelines/<name>.yaml).")],
    local: Annotated[bool, typer.Option("--local", help="Run here under kfp.local instead of on a Kubeflow cluster.")] = False,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Local runs: where run directories go.")] = Path("runs"),
    param: ParamOpt = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Run preset: pipeline parameters from configs/run/NAME.yaml (smollm2-cpu, smollm2-gpu, tiny); --param wins.", show_default=False)] = None,
    host: HostOpt = None,
    token: TokenOpt = None,
    namespace: NamespaceOpt = None,
    experiment: Annotated[str, typer.Option("--experiment", help="Kubeflow experiment of the run (created if missing).")] = "charops",
    run_name: Annotated[str | None, typer.Option("--run-name", help="Name of the run (default: <pipeline>-<time>).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Cluster runs: follow the run until it ends; non-zero exit unless it succeeded.")] = False,
    poll: Annotated[float, typer.Option("--poll", help="With --wait: seconds between status checks.")] = 5.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Local runs: stream every step's full output (else one line per step; the logs are in <run>/logs/ either way).")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run a compiled pipeline: here with --local (kfp.local), else on a Kubeflow cluster."""
    from charops.pipeline.spec import parse_params

    spec, param = spec_and_params(pipeline, param, preset)
    # The spec's own version is the default of its `pipeline_version` parameter, so the
    # register step records which pipeline produced the model.
    defaults = {"pipeline_version": spec.version or ""}
    if local:
        from charops.pipeline.local import run_local

        result = run_local(pipeline, param or [], runs_dir=runs_dir, run_name=run_name,
                           defaults=defaults, echo=sys.stderr if verbose else None,
                           live=None if verbose or quiet else sys.stderr)
        if as_json:
            from dataclasses import asdict

            echo_json(asdict(result))
        elif not quiet:
            _print_local(result, verbose)
        if result.status != "succeeded":
            log = result.logs.get(result.failed_task or "", str(Path(result.run_dir) / "logs"))
            raise CharopsError(f"pipeline {result.pipeline}: {result.error} (full log: {log})")
        return

    from charops.pipeline.client import connect

    values = parse_params(spec, param or [])
    if "pipeline_version" in spec.parameters and "pipeline_version" not in values:
        values["pipeline_version"] = defaults["pipeline_version"]
    client = connect(host, token, namespace)
    ref = client.submit_run(pipeline, values, experiment=experiment, run_name=run_name)
    if not as_json and not quiet:
        uploaded = f" (uploaded {' and '.join(ref.uploaded)})" if ref.uploaded else ""
        typer.echo(f"pipeline {spec.name} version {ref.version}{uploaded}")
        typer.echo(f"run {ref.run_name} ({ref.run_id}): {ref.url}")
    final = None
    if wait:
        final = client.wait_run(ref.run_id, poll_s=poll, on_status=None if as_json or quiet else (
            lambda s: typer.echo(f"  {s.state}" + (f": {s.error}" if s.error else ""), err=True)))
    if as_json:
        echo_json({**ref.to_dict(), "params": values,
                   "final": final.to_dict() if final is not None else None})
    if final is not None and final.exit_code:
        raise typer.Exit(final.exit_code)


def compile(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Pipelines to compile: names (full) or pipelines/*.py paths.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every pipelines/*.py.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 listing compiled YAML that is stale.")] = False,
    config: Annotated[str, typer.Option("--config", "-c", help="Cluster config: preset of configs/pipeline/ or a YAML file.")] = "cluster",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output YAML (one pipeline only; default pipelines/<name>.yaml).")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compile pipelines/<name>.py to versioned KFP YAML (pipelines/<name>.yaml).

    Name the pipelines, or pass --all; with neither it prints this help (--check alone checks all).
    """
    from charops.pipeline.compile import compile_pipeline, pipeline_names, resolve_source, stale
    from charops.pipeline.tasks import load_cluster_config
    from charops.pipeline.version import read_version

    if not names and not all_ and not check:  # writing every compiled file takes asking for it
        typer.echo(ctx.get_help())
        return
    targets = pipeline_names() if all_ or not names else list(names)
    if output is not None and len(targets) != 1:
        raise CharopsError("--output needs exactly one pipeline")
    cluster = load_cluster_config(config)
    if check:
        bad = [t for t in targets if stale(t, output, cluster)]
        if as_json:
            echo_json({"stale": [str(output or resolve_source(t).with_suffix(".yaml")) for t in bad],
                       "checked": [Path(t).stem for t in targets]})
        for t in bad:
            if not as_json:
                typer.echo(f"stale: {output or resolve_source(t).with_suffix('.yaml')} "
                           f"(run `charops compile {Path(t).stem}`)", err=True)
        if bad:
            raise typer.Exit(1)
        if not as_json and not quiet:
            typer.echo(f"up to date: {', '.join(Path(t).stem for t in targets)}")
        return
    written = []
    for t in targets:
        path = compile_pipeline(t, output, cluster)
        written.append({"path": str(path), "version": read_version(path)})
        if not as_json and not quiet:
            typer.echo(f"{path}  {written[-1]['version']}")
    if as_json:
        echo_json(written)
