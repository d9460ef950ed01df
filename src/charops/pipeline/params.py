"""The parameters of the training pipelines, declared once (pipelines/full.py, pipelines/sft_dpo.py).

A training pipeline takes the same parameters whatever its training stages: the base model and
data, a ``<stage>_config``/``<stage>_overrides`` pair per training stage it runs, the judge, the
evaluation, registration and promotion, and where the steps run (defaults from
``configs/pipeline/cluster.yaml``). ``recipe_parameters`` lists them; ``with_parameters`` gives
a pipeline body that signature, which is all ``@dsl.pipeline`` reads (``inspect.signature``:
names, annotations, defaults), and hands the body the arguments as one namespace::

    from charops.pipeline import params

    @dsl.pipeline(name="charops-sft-dpo", description="...")
    @params.with_parameters(params.recipe_parameters(cluster, stages=("sft", "dpo")))
    def sft_dpo(p):
        base, prep = base_and_data(cluster, where, **params.source_arguments(p))
        tuned = params.train(sft, "sft", p, cluster, where, model=..., dataset=...)  # p.sft_config...

A parameter added here appears in every training pipeline at once; the compiled YAML lists
inputs by name, so their order here does not change it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from charops.pipeline.tasks import ClusterConfig, Placement, training_step


def _param(name: str, annotation: type, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation,
                             default=default)


def recipe_parameters(cluster: ClusterConfig, stages: Sequence[str]) -> list[inspect.Parameter]:
    """The parameters of a training pipeline running ``stages`` (its training steps, in order)."""
    # Defaults that are lists are never mutated: KFP reads them from the signature only.
    params = [
        _param("base_model", str, "charops:tiny"),
        _param("model_config", str, "tiny"),
        _param("model_overrides", list, []),
        _param("data", str, ""),
        _param("data_config", str, "default"),
        _param("data_overrides", list, []),
    ]
    for stage in stages:
        params += [_param(f"{stage}_config", str, "tiny-cpu"), _param(f"{stage}_overrides", list, [])]
    params += [
        _param("judge", str, "reward_model"),
        _param("reward_config", str, "tiny-cpu"),
        _param("reward_overrides", list, []),
        _param("eval_config", str, "default"),
        _param("eval_overrides", list, []),
        _param("eval_baseline", str, "production"),
        _param("eval_mode", str, "both"),
        _param("model_name", str, "charops-chat"),
        _param("promote_to", str, ""),
        _param("promote_config", str, "default"),
        _param("promote_overrides", list, []),
        _param("store", str, cluster.store),
        _param("pipeline_version", str, ""),
        *placement_parameters(cluster),
        _param("gpus", int, -1),
        _param("nodes", int, 1),
        _param("trainjob_overrides", list, []),
    ]
    return params


def placement_parameters(cluster: ClusterConfig) -> list[inspect.Parameter]:
    """Where the steps run (the fields of ``Placement``), defaults from the cluster config."""
    return [
        _param("accelerator_type", str, cluster.accelerator_type),
        _param("accelerator_limit", int, cluster.accelerator_limit),
        _param("node_selector", dict, cluster.node_selector),
        _param("tolerations", list, cluster.tolerations),
        _param("s3_secret", str, cluster.s3_secret),
        _param("judge_secret", str, cluster.judge_secret),
        _param("model_cache_pvc", str, cluster.model_cache_pvc),
    ]


def placement(p: SimpleNamespace) -> Placement:
    """The ``Placement`` of a pipeline's arguments (``placement_parameters``)."""
    return Placement(p.accelerator_type, p.accelerator_limit, p.node_selector, p.tolerations,
                     p.s3_secret, p.judge_secret, p.model_cache_pvc)


def train(component: Callable, stage: str, p: SimpleNamespace, cluster: ClusterConfig,
          where: Placement, *, model: Any, dataset: Any):
    """The training step of ``stage`` (its ``component``) with the pipeline's arguments for it:
    ``<stage>_config``, ``<stage>_overrides`` and where it runs (gpus, nodes, TrainJob)."""
    task = component(model=model, dataset=dataset, config=getattr(p, f"{stage}_config"),
                     overrides=getattr(p, f"{stage}_overrides"), gpus=p.gpus, nodes=p.nodes,
                     trainjob_overrides=p.trainjob_overrides)
    return training_step(task, cluster, where, stage)


def source_arguments(p: SimpleNamespace) -> dict[str, Any]:
    """The pipeline's arguments for ``recipe.base_and_data``: the base model and the data."""
    names = ("base_model", "model_config", "model_overrides", "data", "data_config", "data_overrides")
    return {name: getattr(p, name) for name in names}


def evaluation_arguments(p: SimpleNamespace) -> dict[str, Any]:
    """The pipeline's arguments for ``recipe.evaluate_and_register``: judge, evaluation,
    registration and promotion."""
    names = ("judge", "reward_config", "reward_overrides", "eval_config", "eval_overrides",
             "eval_baseline", "model_name", "store", "base_model", "pipeline_version", "promote_to",
             "promote_config", "promote_overrides", "eval_mode")
    return {name: getattr(p, name) for name in names}


def with_parameters(parameters: list[inspect.Parameter]) -> Callable[[Callable], Callable]:
    """Give ``body(p)`` the signature ``parameters``; it is called with them as ``p.<name>``."""
    signature = inspect.Signature(parameters)

    def decorate(body: Callable[[SimpleNamespace], Any]) -> Callable:
        @functools.wraps(body)
        def pipeline(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return body(SimpleNamespace(**bound.arguments))

        pipeline.__signature__ = signature  # what inspect.signature (and so KFP) reads
        return pipeline

    return decorate
