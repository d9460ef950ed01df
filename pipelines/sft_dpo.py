"""The recipe without continued pretraining: data prep -> SFT -> DPO -> [reward model] ->
evaluate (judged by ``judge``, against ``model_name``'s production version when it has one,
else the base model: ``eval_baseline``) -> register -> [promotion gate -> promote, when
``promote_to`` is staging or production]. Parameters: ``charops.pipeline.params``.

For a base model that already speaks the language (any Hugging Face chat model): fine-tune it
on the character dialogues, align it on preference pairs, compare it with the base model::

    charops compile sft_dpo
    charops submit pipelines/sft_dpo.yaml --local
    charops submit pipelines/sft_dpo.yaml --host https://kfp.example.com \
        --param base_model=s3://models/qwen2-1.5b-instruct --param sft_config=qwen2-7b-zero3 \
        --param 'sft_overrides=["lora.enabled=true"]'      # presets: configs/sft/*.yaml
"""

from kfp import dsl

from charops.components.dpo.component import dpo
from charops.components.sft.component import sft
from charops.pipeline import params
from charops.pipeline.recipe import base_and_data, evaluate_and_register
from charops.pipeline.tasks import ClusterConfig


def build(cluster: ClusterConfig):
    """The pipeline function, its cluster parameters' defaults taken from ``cluster``."""

    @dsl.pipeline(name="charops-sft-dpo",
                  description="Character role-play fine-tuning without pretraining: data prep, "
                              "multi-turn SFT, DPO, evaluation against the production version "
                              "(the base model when there is none; judged by a reward model, an "
                              "LLM endpoint or nobody), registration in the artifact store.")
    @params.with_parameters(params.recipe_parameters(cluster, stages=("sft", "dpo")))
    def sft_dpo(p):
        where = params.placement(p)
        base, prep = base_and_data(cluster, where, **params.source_arguments(p))
        data = prep.outputs["dataset"]
        tuned = params.train(sft, "sft", p, cluster, where, model=base.outputs["model"], dataset=data)
        aligned = params.train(dpo, "dpo", p, cluster, where, model=tuned.outputs["trained_model"], dataset=data)
        evaluate_and_register(cluster, where, model=aligned.outputs["trained_model"],
                              dataset=data, baseline=base.outputs["model"],
                              reward_base=tuned.outputs["trained_model"], **params.evaluation_arguments(p))

    return sft_dpo
