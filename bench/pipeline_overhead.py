"""Orchestration overhead of the local pipeline: kfp.local vs. the same library calls in-process.

Runs ``pipelines/full.yaml`` with ``charops.pipeline.local.run_local`` (every step a
subprocess, artifacts passed as files), then the same stages with the same configs (presets
and overrides taken from the pipeline's parameters) as plain function calls in one process,
and reports per step: pipeline wall time, direct wall time, and the difference (process start,
imports, kfp executor, artifact plumbing), split into the time a fresh interpreter takes to
import the step's modules and the rest. One run of each; on a shared machine expect noise of a
few percent::

    .venv/bin/python bench/pipeline_overhead.py                      # the README defaults
    .venv/bin/python bench/pipeline_overhead.py --param pretrain_overrides='["max_steps=10"]'

Prints a table and writes bench/results/pipeline_overhead.json.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Pipeline task name -> the modules its component imports when it runs. A pipeline step is a
# fresh Python process that pays these imports again; the in-process run pays them once.
STEP_IMPORTS = {
    "base-model": "charops.components.common, charops.model.init, torch, transformers",
    "data-prep": "charops.components.common, charops.data.prepare, charops.data.validate, "
                 "charops.model.load, transformers",
    "pretrain": "charops.components.common, charops.train.pretrain",
    "sft": "charops.components.common, charops.train.sft",
    "dpo": "charops.components.common, charops.train.dpo",
    "evaluate": "charops.components.common, charops.eval.heldout, transformers",
    "register": "charops.components.common, charops.registry, charops.storage",
}
STEPS = list(STEP_IMPORTS)


def fresh_import_seconds(modules: str) -> float:
    """Wall time of a new interpreter importing ``modules`` (median of 3)."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {modules}"], check=True)
        times.append(time.perf_counter() - t0)
    return sorted(times)[1]


def direct(values: dict, work: Path) -> dict[str, float]:
    """The full pipeline's stages as in-process calls, timed one by one."""
    from charops.components.common import stage_config
    from charops.data.prepare import PrepareConfig
    from charops.data.prepare import run as prepare
    from charops.eval.heldout import HeldoutEvalConfig
    from charops.eval.heldout import run as heldout
    from charops.model.init import ModelInitConfig
    from charops.model.init import run as model_init
    from charops.registry import register
    from charops.storage import open_store
    from charops.train.dpo import DPOConfig
    from charops.train.dpo import run as dpo
    from charops.train.pretrain import PretrainConfig
    from charops.train.pretrain import run as pretrain
    from charops.train.sft import SFTConfig
    from charops.train.sft import run as sft

    if values["base_model"] != "charops:tiny":
        raise SystemExit("the benchmark builds the embedded model: leave base_model at charops:tiny")
    seconds: dict[str, float] = {}

    def timed(step, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        seconds[step] = time.perf_counter() - t0
        print(f"direct {step}: {seconds[step]:.1f}s", file=sys.stderr)
        return out

    base, data = work / "base", work / "dataset"
    timed("base-model", model_init, stage_config(ModelInitConfig, values["model_config"],
                                                 values["model_overrides"], output_dir=str(base)))
    prep_paths = {"model": str(base), "output_dir": str(data)}
    if values["data"]:
        prep_paths["inputs"] = [values["data"]]
    timed("data-prep", prepare, stage_config(PrepareConfig, values["data_config"],
                                             values["data_overrides"], **prep_paths))
    model = base
    for step, cls, fn in (("pretrain", PretrainConfig, pretrain), ("sft", SFTConfig, sft),
                          ("dpo", DPOConfig, dpo)):
        extra = {"ref_model": str(model)} if step == "dpo" else {}
        timed(step, fn, stage_config(cls, values[f"{step}_config"], values[f"{step}_overrides"],
                                     model=str(model), dataset=str(data),
                                     output_dir=str(work / step), **extra))
        model = work / step / "model"
    metrics = timed("evaluate", heldout, stage_config(
        HeldoutEvalConfig, values["eval_config"], values["eval_overrides"], model=str(model),
        dataset=str(data), output_dir=str(work / "eval"), baseline_model=str(base)))
    store = open_store(str(work / "store"))
    timed("register", register, store, model, values["model_name"],
          {"loss": metrics["model"]["loss"]}, {"run_id": "bench"}, work / "eval")
    return seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default=str(ROOT / "pipelines" / "full.yaml"))
    ap.add_argument("--param", action="append", default=[], help="NAME=VALUE, as charops submit")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline_overhead.json"))
    args = ap.parse_args(argv)

    from charops.io import write_json
    from charops.pipeline.local import run_local
    from charops.pipeline.spec import load_spec, parse_params

    spec = load_spec(args.pipeline)
    given = parse_params(spec, args.param)
    values = {name: p.default for name, p in spec.parameters.items()} | given
    work = Path(tempfile.mkdtemp(prefix="charops-bench-"))
    try:
        # The pipeline's register step publishes into a throwaway store, like the direct run.
        params = [*args.param, f"store={work / 'pipeline-store'}"]
        t0 = time.perf_counter()
        result = run_local(args.pipeline, params, runs_dir=work / "runs", run_name="bench")
        pipeline_total = time.perf_counter() - t0
        if result.status != "succeeded":
            raise SystemExit(f"pipeline failed: {result.error}")
        t0 = time.perf_counter()
        direct_seconds = direct(values, work / "direct")
        direct_total = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for step in STEPS:
        p, d = result.task_seconds[step], direct_seconds[step]
        imports = fresh_import_seconds(STEP_IMPORTS[step])
        rows.append({"step": step, "pipeline_s": round(p, 3), "direct_s": round(d, 3),
                     "overhead_s": round(p - d, 3), "fresh_imports_s": round(imports, 3),
                     "kfp_and_artifacts_s": round(p - d - imports, 3)})
    overhead = pipeline_total - direct_total
    imports_total = sum(r["fresh_imports_s"] for r in rows)
    report = {
        "pipeline": spec.name, "version": spec.version, "params": given,
        "pipeline_total_s": round(pipeline_total, 3), "direct_total_s": round(direct_total, 3),
        "overhead_s": round(overhead, 3),
        "overhead_pct_of_pipeline": round(100 * overhead / pipeline_total, 2),
        "mean_overhead_per_step_s": round(overhead / len(STEPS), 3),
        # The part of the overhead that is re-importing the stack in each step's process
        # (which any one-container-per-step orchestrator pays), and the rest: kfp.local's
        # executor, artifact plumbing, scheduling, noise.
        "fresh_imports_total_s": round(imports_total, 3),
        "kfp_and_artifacts_total_s": round(overhead - imports_total, 3),
        "kfp_and_artifacts_pct_of_pipeline": round(100 * (overhead - imports_total) / pipeline_total, 2),
        "steps": rows,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": __import__("os").cpu_count()},
    }
    print(f"{'step':<12}{'pipeline s':>12}{'direct s':>10}{'overhead s':>12}{'imports s':>11}{'rest s':>8}")
    for r in rows:
        print(f"{r['step']:<12}{r['pipeline_s']:>12.1f}{r['direct_s']:>10.1f}{r['overhead_s']:>12.2f}"
              f"{r['fresh_imports_s']:>11.2f}{r['kfp_and_artifacts_s']:>8.2f}")
    print(f"{'total':<12}{pipeline_total:>12.1f}{direct_total:>10.1f}{overhead:>12.2f}"
          f"{imports_total:>11.2f}{overhead - imports_total:>8.2f}")
    print(f"overhead {report['overhead_pct_of_pipeline']:.1f}% of the pipeline's wall time; "
          f"without the per-process imports {report['kfp_and_artifacts_pct_of_pipeline']:.1f}%")
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
