"""Evaluate an existing model against a baseline on held-out character dialogues.

The model (and the baseline) are any model references: a Hugging Face directory, an
``s3://`` prefix (e.g. a registered model, ``models/<name>/<version>/model`` in the store) or
a hub id; ``charops:tiny`` builds the embedded tiny model. The dataset is prepared with the
evaluated model's tokenizer::

    charops compile eval_only
    charops submit pipelines/eval_only.yaml --local --param model=runs/final-model
"""

# Pipeline parameters' defaults are lists ([] = no overrides): KFP reads them from the
# signature and never calls the function with them, so B006 does not apply.
# ruff: noqa: B006

from kfp import dsl

from charops.components.base_model.component import base_model as base_model_op
from charops.components.data_prep.component import data_prep
from charops.components.evaluate.component import evaluate
from charops.pipeline.tasks import ClusterConfig, Placement, light_step, training_step


def build(cluster: ClusterConfig):
    """The pipeline function, its cluster parameters' defaults taken from ``cluster``."""

    @dsl.pipeline(name="charops-eval-only",
                  description="Held-out evaluation of a character role-play model against a "
                              "baseline: response loss/perplexity per category and topic, "
                              "preference accuracy, sample replies.")
    def eval_only(
        model: str,
        baseline_model: str = "charops:tiny",
        model_config: str = "tiny",
        model_overrides: list = [],
        data: str = "",
        data_config: str = "default",
        data_overrides: list = [],
        eval_config: str = "heldout",
        eval_overrides: list = [],
        accelerator_type: str = cluster.accelerator_type,
        accelerator_limit: int = cluster.accelerator_limit,
        node_selector: dict = cluster.node_selector,
        tolerations: list = cluster.tolerations,
        s3_secret: str = cluster.s3_secret,
        judge_secret: str = cluster.judge_secret,
        model_cache_pvc: str = cluster.model_cache_pvc,
    ):
        where = Placement(accelerator_type, accelerator_limit, node_selector, tolerations,
                          s3_secret, judge_secret, model_cache_pvc)
        candidate = light_step(base_model_op(base_model=model, config=model_config,
                                             overrides=model_overrides), cluster, where, "model")
        baseline = light_step(base_model_op(base_model=baseline_model, config=model_config,
                                            overrides=model_overrides), cluster, where, "baseline")
        prep = light_step(data_prep(model=candidate.outputs["model"], data=data,
                                    config=data_config, overrides=data_overrides),
                          cluster, where, "data prep")
        training_step(evaluate(model=candidate.outputs["model"], dataset=prep.outputs["dataset"],
                               baseline=baseline.outputs["model"], config=eval_config,
                               overrides=eval_overrides), cluster, where, "evaluate", judge=True)

    return eval_only
