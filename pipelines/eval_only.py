"""Evaluate an existing model against another: one registry entry against another, say.

The model (and the baseline) are any model references: a Hugging Face directory, an
``s3://`` prefix (a registry entry's ``model_uri``, ``s3://.../models/<name>/<version>/model``,
e.g. the candidate version against the current production version) or a hub id;
``charops:tiny`` builds the embedded tiny model. The dataset is prepared with the evaluated
model's tokenizer; with ``judge=reward_model`` a reward model is trained from the candidate on
its preference pairs first (the same tokenizer), with ``judge=openai`` the endpoint comes from
the ``charops-judge`` Secret::

    charops compile eval_only
    charops submit pipelines/eval_only.yaml --local --param model=runs/final-model
    charops submit pipelines/eval_only.yaml --host https://kfp.example.com --param judge=openai \
        --param model=s3://charops/models/charops-chat/4/model \
        --param baseline_model=s3://charops/models/charops-chat/3/model
"""

# Pipeline parameters' defaults are lists ([] = no overrides): KFP reads them from the
# signature and never calls the function with them, so B006 does not apply.
# ruff: noqa: B006

from kfp import dsl

from charops.components.base_model.component import base_model as base_model_op
from charops.components.data_prep.component import data_prep
from charops.pipeline.recipe import judged_evaluation
from charops.pipeline.tasks import ClusterConfig, Placement, light_step


def build(cluster: ClusterConfig):
    """The pipeline function, its cluster parameters' defaults taken from ``cluster``."""

    @dsl.pipeline(name="charops-eval-only",
                  description="Evaluation of a character role-play model against a baseline "
                              "(CharacterGLM protocol): generated replies judged point-wise and "
                              "pair-wise per character category and topic, automatic signals, "
                              "reports.")
    def eval_only(
        model: str,
        baseline_model: str = "charops:tiny",
        model_config: str = "tiny",
        model_overrides: list = [],
        data: str = "",
        data_config: str = "default",
        data_overrides: list = [],
        judge: str = "reward_model",
        reward_config: str = "tiny-cpu",
        reward_overrides: list = [],
        eval_config: str = "default",
        eval_overrides: list = [],
        eval_mode: str = "both",
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
        judged_evaluation(cluster, where, model=candidate.outputs["model"],
                          dataset=prep.outputs["dataset"], baseline=baseline.outputs["model"],
                          reward_base=candidate.outputs["model"], judge=judge,
                          reward_config=reward_config, reward_overrides=reward_overrides,
                          eval_config=eval_config, eval_overrides=eval_overrides, eval_mode=eval_mode)

    return eval_only
