"""Steps shared by the training pipelines (pipelines/full.py, pipelines/sft_dpo.py).

Both start from a base model and the prepared data and end by evaluating the trained model
against the base model and registering it; only the training steps in between differ.
"""

from kfp import dsl

from charops.components.base_model.component import base_model as base_model_op
from charops.components.data_prep.component import data_prep
from charops.components.evaluate.component import evaluate
from charops.components.register.component import register
from charops.pipeline.tasks import ClusterConfig, Placement, light_step, training_step


def base_and_data(cluster: ClusterConfig, where: Placement, *, base_model, model_config,
                  model_overrides, data, data_config, data_overrides):
    """The base model (built or fetched) and the data prepared with its tokenizer."""
    base = light_step(base_model_op(base_model=base_model, config=model_config,
                                    overrides=model_overrides), cluster, where, "base model")
    prep = light_step(data_prep(model=base.outputs["model"], data=data, config=data_config,
                                overrides=data_overrides), cluster, where, "data prep")
    return base, prep


def evaluate_and_register(cluster: ClusterConfig, where: Placement, *, model, dataset, baseline,
                          eval_config, eval_overrides, model_name, store, base_model,
                          pipeline_version) -> None:
    """Held-out evaluation of ``model`` against ``baseline``, then its registration."""
    evaluation = training_step(evaluate(model=model, dataset=dataset, baseline=baseline,
                                        config=eval_config, overrides=eval_overrides),
                               cluster, where, "evaluate", judge=True)
    light_step(register(model=model, dataset=dataset, evaluation=evaluation.outputs["results"],
                        name=model_name, store=store, base_model=base_model,
                        pipeline_version=pipeline_version,
                        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER),
               cluster, where, "register")
