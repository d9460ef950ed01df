"""The ``pretrain`` component: continued pretraining (causal LM loss on every token).

A thin wrapper of ``charops.train.pretrain.run`` (config ``PretrainConfig``, presets under
``configs/pretrain/``): the base Model and prepared Dataset in, the trained Model, its Metrics
(losses, steps, throughput from ``training_summary.json``) and a Markdown report out::

    from kfp import local
    from charops.components.pretrain.component import pretrain
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    pretrain(model=base_task.outputs["model"], dataset=prep_task.outputs["dataset"],
             config="tiny-cpu", overrides=["max_steps=5"])
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def pretrain(model: Input[Model], dataset: Input[Dataset], config: str, overrides: list,
             trained_model: Output[Model], metrics: Output[Metrics], report: Output[Markdown],
             gpus: int = -1, nodes: int = 1, trainjob_overrides: list = []):  # noqa: B006 (KFP reads the default; never mutated)
    """Continue pretraining ``model`` on the dataset's packed ``pretrain/`` split.

    The inputs and outputs every training component has are described in
    ``charops.pipeline.component_docs.TRAINING`` (the README shows them).

    Args:
        config: ``configs/pretrain/`` preset (``tiny-cpu``, ``qwen2-7b-zero3``, ...)
        overrides: ``key=value`` overrides (e.g. ``["max_steps=20", "lora.enabled=true"]``);
            ``model``, ``dataset``, ``output_dir`` are set from the artifacts
    """
    from charops.components.common import run_training

    run_training("pretrain", config, overrides, model, dataset, trained_model, metrics, report,
                 gpus=gpus, nodes=nodes, trainjob_overrides=trainjob_overrides)
