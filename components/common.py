"""Artifact plumbing shared by the charops KFP components (imported inside component bodies).

A component body is: import the stage's library function, build its config from a preset plus
``key=value`` overrides (pipeline parameters), point its input/output paths at the KFP
artifacts, call it, and copy its numbers onto the output artifacts (``Metrics.log_metric``,
``Model.metadata``) so lineage and numbers show in the Kubeflow UI. These helpers are that
plumbing; they run inside the component's pod (or kfp.local subprocess), never in the
pipeline definition::

    from charops.components.common import stage_config
    cfg = stage_config(SFTConfig, "tiny-cpu", ["max_steps=5"], model="/in/m", output_dir="/out")
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeVar

from charops.config import load_config, parse_overrides, read_yaml, resolve_config_path, to_dict
from charops.errors import ConfigError

T = TypeVar("T")


def stage_config(cls: type[T], preset: str, overrides: list[str] | None, **paths: Any) -> T:
    """``cls`` from ``preset`` (empty = the dataclass defaults) + overrides, with ``paths`` set.

    The paths are the artifact locations the pipeline decides; a user override of one of them
    would silently point the stage elsewhere, so it is refused.
    """
    overrides = [str(o) for o in overrides or []]
    clash = sorted(set(parse_overrides(overrides)) & set(paths))
    if clash:
        raise ConfigError(f"{cls.stage} overrides: '{clash[0]}' is set by the pipeline from its "
                          "artifacts; remove it from the overrides")
    data = read_yaml(resolve_config_path(cls.stage, preset)) if preset else {}
    # Paths replace the preset's values as given (no YAML parsing of file names), before the
    # config is checked: a stage that requires e.g. `model` sees it set.
    return load_config(cls, {**data, **paths}, overrides)


def numeric_leaves(summary: dict, prefix: str = "") -> dict[str, float]:
    """Finite int/float leaves of a nested summary dict, keys joined with '.' (bools skipped)."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_leaves(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def log_metrics(metrics: Any, summary: dict, keys: list[str] | None = None) -> dict[str, float]:
    """Log a summary's numbers on a KFP ``Metrics`` artifact (only ``keys`` when given)."""
    leaves = numeric_leaves(summary)
    chosen = {k: v for k, v in leaves.items() if keys is None or k in keys}
    for name, value in sorted(chosen.items()):
        metrics.log_metric(name, value)
    return chosen


def summary_markdown(title: str, summary: dict, config: dict | None = None) -> str:
    """A Markdown report of a stage summary: its numbers as a table, its config as JSON."""
    lines = [f"# {title}", ""]
    numbers = numeric_leaves(summary)
    if numbers:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(numbers.items())]
        lines.append("")
    if config is not None:
        lines += ["## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True,
                                                          ensure_ascii=False, default=str), "```", ""]
    return "\n".join(lines)


def write_markdown(artifact: Any, text: str) -> None:
    """Write a KFP ``Markdown`` artifact (the UI renders the file at ``artifact.path``)."""
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def describe_model(artifact: Any, model_dir: str | Path, **extra: Any) -> str:
    """Set lineage metadata on a KFP ``Model`` artifact; returns the model's content hash."""
    from charops.io import sha256_tree

    digest = sha256_tree(model_dir)
    artifact.metadata["sha256"] = digest
    for key, value in extra.items():
        artifact.metadata[key] = value
    return digest


def fetch_data(ref: str) -> str:
    """A local path for the ``data`` parameter: a path as is, an ``s3://`` prefix downloaded.

    The prefix must have been published to the store (``charops store put`` / ``put_dir``), so
    a half-uploaded dataset is never read.
    """
    if not ref.startswith("s3://"):
        return ref
    import tempfile
    from urllib.parse import urlparse

    from charops.storage import open_store

    parsed = urlparse(ref)
    dest = Path(tempfile.mkdtemp(prefix="charops-data-")) / "data"
    open_store(f"s3://{parsed.netloc}").download_prefix(parsed.path.strip("/"), dest)
    return str(dest)


def run_training(stage: str, config: str, overrides: list[str] | None, model: Any, dataset: Any,
                 trained_model: Any, metrics: Any, report: Any, gpus: int = -1, nodes: int = 1,
                 trainjob_overrides: list[str] | None = None, extra_uris: dict[str, str] | None = None,
                 **extra_paths: str) -> dict:
    """The body of a training component: one stage (``charops.train.stages.STAGES``) on artifacts.

    ``model``/``dataset`` are the input artifacts, ``trained_model``/``metrics``/``report`` the
    outputs; ``extra_paths`` are further config path fields (DPO's ``ref_model``). A stage
    writes a run directory (``model/``, ``checkpoints/``, ``training_summary.json``); only its
    ``model/`` (which carries a copy of the summary) becomes the output artifact.

    Where it runs (``charops.train.launch``): ``gpus`` processes in this pod (-1 = one per
    visible GPU, i.e. the step's accelerator limit; more than one runs under ``torchrun``), or,
    with ``nodes > 1``, a Kubeflow Trainer TrainJob of ``nodes`` x ``gpus`` processes reading the
    input artifacts from the store (``extra_uris``: the store URIs of ``extra_paths``), with
    ``trainjob_overrides`` (``key=value`` of ``TrainJobConfig``: cleanup, cpu, memory, runtime...).
    """
    import shutil
    import tempfile

    from charops.train.stages import stage_named

    spec = stage_named(stage)
    work = tempfile.mkdtemp(prefix=f"charops-{stage}-")
    try:
        cfg = stage_config(spec.config, config, overrides, model=model.path, dataset=dataset.path,
                           output_dir=work, **extra_paths)
        summary = _launch(cfg, config, overrides, model, dataset, gpus, nodes,
                          trainjob_overrides or [], extra_uris or {}, Path(work))
        Path(trained_model.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(work) / "model"), trained_model.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    headline = {k: v for k, v in summary.items() if k not in _NOT_METRICS}
    log_metrics(metrics, headline)
    describe_model(trained_model, trained_model.path, stage=stage, config=config,
                   overrides=[str(o) for o in overrides or []],
                   base_model=model.metadata.get("base_model", model.uri))
    write_markdown(report, summary_markdown(spec.title, headline, to_dict(cfg)))
    return summary


def _launch(cfg: Any, config: str, overrides: list[str] | None, model: Any, dataset: Any,
            gpus: int, nodes: int, trainjob_overrides: list[str], extra_uris: dict[str, str],
            work: Path) -> dict:
    """Run the stage in this process, under torchrun on this pod's GPUs, or as a TrainJob."""
    from charops.train import launch
    from charops.train.stages import STAGES

    visible = 0
    try:
        import torch

        visible = torch.cuda.device_count()
    except ImportError:
        pass
    procs = launch.resolve_gpus(gpus, visible)
    if nodes <= 1:
        return launch.run_stage(cfg.stage, cfg, STAGES[cfg.stage].run, procs)
    from charops.config import load_config
    from charops.deploy.trainjob import TrainJobConfig

    tj = load_config(TrainJobConfig, None, [f"nodes={nodes}", f"procs_per_node={procs}",
                                            *[str(o) for o in trainjob_overrides]])
    launch.train_on_cluster(cfg.stage, config, [str(o) for o in overrides or []],
                            model_uri=model.uri, dataset_uri=dataset.uri, extra_uris=extra_uris,
                            dest=work / "model", cfg=tj)
    return json.loads((work / "model" / "training_summary.json").read_text(encoding="utf-8"))


# Summary sections that are inputs or environment, not results of the run.
_NOT_METRICS = ("config", "base_model", "dataset", "deepspeed", "versions", "loss_curve",
                "model_dir", "world_size")
