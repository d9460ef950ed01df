"""The ``evaluate`` component: held-out evaluation of a Model, optionally against a baseline.

A thin wrapper of ``charops.eval.heldout.run`` (config ``HeldoutEvalConfig``, presets under
``configs/eval/``): validation response-token loss and perplexity overall, per character
category and per dialogue topic, preference accuracy, sample replies. Outputs: ``results``
(the directory with ``metrics.json``, ``samples.jsonl``, ``report.md``), ``metrics`` (the
headline numbers, shown in the Kubeflow UI) and ``report`` (``report.md`` as Markdown)::

    from kfp import local
    from charops.components.evaluate.component import evaluate
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    evaluate(model=..., dataset=..., baseline=base_task.outputs["model"],
             config="heldout", overrides=["num_samples=2"])
"""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def evaluate(model: Input[Model], dataset: Input[Dataset], config: str, overrides: list,
             results: Output[Artifact], metrics: Output[Metrics], report: Output[Markdown],
             baseline: Optional[Input[Model]] = None):  # noqa: UP045 (KFP reads typing.Optional)
    """Evaluate ``model`` (and ``baseline``, when given) on the dataset's validation split."""
    from pathlib import Path

    from charops.components.common import log_metrics, stage_config, write_markdown
    from charops.eval.heldout import HeldoutEvalConfig, run

    # No baseline input means no baseline, whatever the preset names for command-line use.
    paths = {"model": model.path, "dataset": dataset.path, "output_dir": results.path,
             "baseline_model": baseline.path if baseline is not None else None}
    out = run(stage_config(HeldoutEvalConfig, config, overrides, **paths))
    # The headline numbers; per-category/topic breakdowns stay in results/metrics.json.
    headline = {"loss": out["model"]["loss"], "perplexity": out["model"]["perplexity"],
                "preference_accuracy": out["model"]["preference"]["accuracy"]}
    if "baseline" in out:
        headline.update({"baseline_loss": out["baseline"]["loss"],
                         "baseline_perplexity": out["baseline"]["perplexity"],
                         "baseline_preference_accuracy": out["baseline"]["preference"]["accuracy"],
                         "loss_delta": out["loss_delta"]})
    log_metrics(metrics, headline)
    results.metadata["dataset_sha256"] = out.get("dataset_sha256") or ""
    write_markdown(report, (Path(results.path) / "report.md").read_text(encoding="utf-8"))
