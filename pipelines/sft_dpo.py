"""The recipe without continued pretraining: data prep -> SFT -> DPO -> [reward model] ->
evaluate (judged by ``judge``) -> register -> [promotion gate -> promote, when ``promote_to``
is staging or production].

For a base model that already speaks the language (any Hugging Face chat model): fine-tune it
on the character dialogues, align it on preference pairs, compare it with the base model::

    charops compile sft_dpo
    charops submit pipelines/sft_dpo.yaml --local
    charops submit pipelines/sft_dpo.yaml --host https://kfp.example.com \
        --param base_model=s3://models/qwen2-1.5b-instruct --param sft_config=qwen2-7b-zero3 \
        --param 'sft_overrides=["lora.enabled=true"]'      # presets: configs/sft/*.yaml
"""

# Pipeline parameters' defaults are lists ([] = no overrides): KFP reads them from the
# signature and never calls the function with them, so B006 does not apply.
# ruff: noqa: B006

from kfp import dsl

from charops.components.dpo.component import dpo
from charops.components.sft.component import sft
from charops.pipeline.recipe import base_and_data, evaluate_and_register
from charops.pipeline.tasks import ClusterConfig, Placement, training_step


def build(cluster: ClusterConfig):
    """The pipeline function, its cluster parameters' defaults taken from ``cluster``."""

    @dsl.pipeline(name="charops-sft-dpo",
                  description="Character role-play fine-tuning without pretraining: data prep, "
                              "multi-turn SFT, DPO, evaluation against the base model (judged "
                              "by a reward model, an LLM endpoint or nobody), registration in "
                              "the artifact store.")
    def sft_dpo(
        base_model: str = "charops:tiny",
        model_config: str = "tiny",
        model_overrides: list = [],
        data: str = "",
        data_config: str = "default",
        data_overrides: list = [],
        sft_config: str = "tiny-cpu",
        sft_overrides: list = [],
        dpo_config: str = "tiny-cpu",
        dpo_overrides: list = [],
        judge: str = "reward_model",
        reward_config: str = "tiny-cpu",
        reward_overrides: list = [],
        eval_config: str = "default",
        eval_overrides: list = [],
        eval_baseline: str = "production",
        model_name: str = "charops-chat",
        promote_to: str = "",
        promote_config: str = "default",
        promote_overrides: list = [],
        store: str = cluster.store,
        pipeline_version: str = "",
        accelerator_type: str = cluster.accelerator_type,
        accelerator_limit: int = cluster.accelerator_limit,
        gpus: int = -1,
        nodes: int = 1,
        trainjob_overrides: list = [],
        node_selector: dict = cluster.node_selector,
        tolerations: list = cluster.tolerations,
        s3_secret: str = cluster.s3_secret,
        judge_secret: str = cluster.judge_secret,
        model_cache_pvc: str = cluster.model_cache_pvc,
    ):
        where = Placement(accelerator_type, accelerator_limit, node_selector, tolerations,
                          s3_secret, judge_secret, model_cache_pvc)
        base, prep = base_and_data(cluster, where, base_model=base_model,
                                   model_config=model_config, model_overrides=model_overrides,
                                   data=data, data_config=data_config,
                                   data_overrides=data_overrides)
        tuned = training_step(sft(model=base.outputs["model"], dataset=prep.outputs["dataset"],
                                  config=sft_config, overrides=sft_overrides, gpus=gpus, nodes=nodes,
                                    trainjob_overrides=trainjob_overrides),
                              cluster, where, "sft")
        aligned = training_step(dpo(model=tuned.outputs["trained_model"],
                                    dataset=prep.outputs["dataset"], config=dpo_config,
                                    overrides=dpo_overrides, gpus=gpus, nodes=nodes,
                                    trainjob_overrides=trainjob_overrides), cluster, where, "dpo")
        evaluate_and_register(cluster, where, model=aligned.outputs["trained_model"],
                              dataset=prep.outputs["dataset"], baseline=base.outputs["model"],
                              reward_base=tuned.outputs["trained_model"], judge=judge,
                              reward_config=reward_config, reward_overrides=reward_overrides,
                              eval_config=eval_config, eval_overrides=eval_overrides,
                              model_name=model_name, store=store, base_model=base_model,
                              pipeline_version=pipeline_version, promote_to=promote_to,
                              promote_config=promote_config, promote_overrides=promote_overrides,
                              eval_baseline=eval_baseline)

    return sft_dpo
