"""Steps shared by the training pipelines (pipelines/full.py, pipelines/sft_dpo.py).

Both start from a base model and the prepared data and end by evaluating the trained model
against the base model (with the judge the ``judge`` parameter names, training a reward model
first where that is the judge) and registering it, then, when ``promote_to`` names a stage,
promoting it if the promotion gate passes; only the training steps in between differ.
``eval_only`` uses the evaluation part alone.
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from charops.components.base_model.component import base_model as base_model_op
from charops.components.data_prep.component import data_prep
from charops.components.evaluate.component import evaluate
from charops.components.promote.component import promote, promotion_gate
from charops.components.register.component import register
from charops.components.reward.component import reward
from charops.pipeline.tasks import ClusterConfig, Placement, light_step, training_step


def base_and_data(cluster: ClusterConfig, where: Placement, *, base_model, model_config,
                  model_overrides, data, data_config, data_overrides):
    """The base model (built or fetched) and the data prepared with its tokenizer."""
    base = light_step(base_model_op(base_model=base_model, config=model_config,
                                    overrides=model_overrides), cluster, where, "base model")
    prep = light_step(data_prep(model=base.outputs["model"], data=data, config=data_config,
                                overrides=data_overrides), cluster, where, "data prep")
    return base, prep


def judged_evaluation(cluster: ClusterConfig, where: Placement, *, model, dataset, baseline,
                      reward_base, judge, reward_config, reward_overrides, eval_config,
                      eval_overrides, then: Callable[[Any], None] | None = None,
                      eval_baseline: Any = "given", model_name: Any = "", store: Any = "",
                      eval_mode: Any = "single") -> None:
    """The evaluate step with its judge, and ``then(results)`` (the steps that use the results).

    ``judge`` is a run-time parameter, so the choice is a condition in the pipeline: with
    ``reward_model`` a reward model is trained from ``reward_base`` on the dataset's pairs first
    and handed to the evaluation; otherwise (``openai``, ``none``) the evaluation runs alone and
    no GPU time goes to a reward model nobody reads. ``eval_baseline="production"`` makes
    ``model_name``'s production version in ``store`` the baseline when there is one (the
    promotion gate compares with production), ``baseline`` otherwise. ``eval_mode`` is the
    evaluate step's ``mode``: ``single`` replies, ``multiturn`` conversations, or ``both``.
    ``then`` is added inside each branch rather than after both through ``dsl.OneOf``, which kfp.local cannot resolve for artifacts
    ("Expected 1 artifact in ArtifactSelectorSpec").
    """
    with dsl.If(judge == "reward_model", "judge: reward model"):
        rm = training_step(reward(model=reward_base, dataset=dataset, config=reward_config,
                                  overrides=reward_overrides), cluster, where, "reward model")
        judged = training_step(evaluate(model=model, dataset=dataset, baseline=baseline,
                                        reward_model=rm.outputs["trained_model"], judge=judge,
                                        config=eval_config, overrides=eval_overrides,
                                        baseline_policy=eval_baseline, model_name=model_name,
                                        store=store, mode=eval_mode),
                               cluster, where, "evaluate", judge=True)
        if then is not None:
            then(judged.outputs["results"])
    with dsl.Else("judge: endpoint or none"):
        judged = training_step(evaluate(model=model, dataset=dataset, baseline=baseline,
                                        judge=judge, config=eval_config, overrides=eval_overrides,
                                        baseline_policy=eval_baseline, model_name=model_name,
                                        store=store, mode=eval_mode),
                               cluster, where, "evaluate", judge=True)
        if then is not None:
            then(judged.outputs["results"])


def gated_promotion(cluster: ClusterConfig, where: Placement, *, entry, store, promote_to,
                    promote_config, promote_overrides) -> None:
    """The conditional last step: off unless ``promote_to`` names a stage; the gate decides and
    the promote step runs only when it passed. Neither is cached: the answer depends on the
    registry's state, not only on the inputs."""
    with dsl.If(promote_to != "", "promotion on"):
        gate = light_step(promotion_gate(entry=entry, store=store, to=promote_to,
                                         config=promote_config, overrides=promote_overrides),
                          cluster, where, "promotion gate")
        gate.set_caching_options(False)
        with dsl.If(gate.outputs["Output"] == "promote", "gate passed"):
            step = light_step(promote(entry=entry, store=store, to=promote_to,
                                      config=promote_config, overrides=promote_overrides,
                                      run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER),
                              cluster, where, "promote")
            step.set_caching_options(False)


def evaluate_and_register(cluster: ClusterConfig, where: Placement, *, model, dataset, baseline,
                          reward_base, judge, reward_config, reward_overrides, eval_config,
                          eval_overrides, model_name, store, base_model, pipeline_version,
                          promote_to, promote_config, promote_overrides,
                          eval_baseline: Any = "given", eval_mode: Any = "single") -> None:
    """Evaluation of ``model`` against ``baseline`` (see :func:`judged_evaluation`), its
    registration, and its gated promotion (see :func:`gated_promotion`)."""

    def register_step(results) -> None:
        registered = light_step(register(model=model, dataset=dataset, evaluation=results,
                                         name=model_name, store=store, base_model=base_model,
                                         pipeline_version=pipeline_version,
                                         run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                         run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER),
                                cluster, where, "register")
        gated_promotion(cluster, where, entry=registered.outputs["entry"], store=store,
                        promote_to=promote_to, promote_config=promote_config,
                        promote_overrides=promote_overrides)

    judged_evaluation(cluster, where, model=model, dataset=dataset, baseline=baseline,
                      reward_base=reward_base, judge=judge, reward_config=reward_config,
                      reward_overrides=reward_overrides, eval_config=eval_config,
                      eval_overrides=eval_overrides, then=register_step,
                      eval_baseline=eval_baseline, model_name=model_name, store=store,
                      eval_mode=eval_mode)
