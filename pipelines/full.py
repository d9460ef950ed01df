"""The full charops recipe as a Kubeflow pipeline: data prep -> pretrain -> SFT -> DPO ->
[reward model] -> evaluate (judged by ``judge``, against ``model_name``'s production version
when it has one, else the base model: ``eval_baseline``) -> register -> [promotion gate ->
promote, when ``promote_to`` is staging or production].

Its parameters are ``charops.pipeline.params.recipe_parameters`` for the stages it trains (the
same set as pipelines/sft_dpo.py, plus ``pretrain_config``/``pretrain_overrides``).

Wiring only: the components live in components/<stage>/, how each task runs on a cluster in
charops.pipeline.tasks (from configs/pipeline/cluster.yaml, read at compile time). Compile and
run it::

    charops compile full                          # -> pipelines/full.yaml (stamped version)
    charops submit pipelines/full.yaml --local    # whole recipe on this machine (kfp.local)
    charops submit pipelines/full.yaml --host https://kfp.example.com --wait \
        --param base_model=s3://models/qwen2-0.5b --param accelerator_limit=4
    charops submit pipelines/full.yaml --host https://kfp.example.com \
        --param judge=openai --param 'eval_overrides=["judge_model=gpt-4o-mini"]' \
        --param promote_to=staging        # promoted only if it beats production (docs/registry.md)
"""

from kfp import dsl

from charops.components.dpo.component import dpo
from charops.components.pretrain.component import pretrain
from charops.components.sft.component import sft
from charops.pipeline import params
from charops.pipeline.recipe import base_and_data, evaluate_and_register
from charops.pipeline.tasks import ClusterConfig


def build(cluster: ClusterConfig):
    """The pipeline function, its cluster parameters' defaults taken from ``cluster``."""

    @dsl.pipeline(name="charops-full",
                  description="Character role-play model recipe (CharacterGLM style): data prep, "
                              "continued pretraining, multi-turn SFT, DPO, evaluation against the "
                              "production version (the base model when there is none; generated "
                              "replies judged point-wise and pair-wise by a reward model, an LLM "
                              "endpoint or nobody), registration in the artifact store.")
    @params.with_parameters(params.recipe_parameters(cluster, stages=("pretrain", "sft", "dpo")))
    def full(p):
        where = params.placement(p)
        base, prep = base_and_data(cluster, where, **params.source_arguments(p))
        data = prep.outputs["dataset"]
        pt = params.train(pretrain, "pretrain", p, cluster, where, model=base.outputs["model"], dataset=data)
        tuned = params.train(sft, "sft", p, cluster, where, model=pt.outputs["trained_model"], dataset=data)
        aligned = params.train(dpo, "dpo", p, cluster, where, model=tuned.outputs["trained_model"], dataset=data)
        evaluate_and_register(cluster, where, model=aligned.outputs["trained_model"],
                              dataset=data, baseline=base.outputs["model"],
                              reward_base=tuned.outputs["trained_model"], **params.evaluation_arguments(p))

    return full
