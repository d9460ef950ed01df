"""The ``sft`` component: supervised fine-tuning with the loss on response tokens only.

A thin wrapper of ``charops.train.sft.run`` (config ``SFTConfig``, presets under
``configs/sft/``): a Model and the prepared Dataset (its ``sft/`` split) in, the fine-tuned
Model, Metrics and a Markdown report out::

    from kfp import local
    from charops.components.sft.component import sft
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    sft(model=..., dataset=..., config="tiny-cpu", overrides=["max_steps=5"])
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def sft(model: Input[Model], dataset: Input[Dataset], config: str, overrides: list,
        trained_model: Output[Model], metrics: Output[Metrics], report: Output[Markdown],
        gpus: int = -1, nodes: int = 1, trainjob_overrides: list = []):  # noqa: B006 (KFP reads the default; never mutated)
    """Fine-tune ``model`` on the dataset's multi-turn dialogues (every assistant turn).

    The inputs and outputs every training component has are described in
    ``charops.pipeline.component_docs.TRAINING`` (the README shows them).

    Args:
        config: ``configs/sft/`` preset (``tiny-cpu``, ``smollm2-cpu``, ``qwen2-7b-zero3``, ...)
        overrides: ``key=value`` overrides (e.g. ``["max_steps=20", "lora.enabled=true"]``);
            ``model``, ``dataset``, ``output_dir`` are set from the artifacts
    """
    from charops.components.common import run_training

    run_training("sft", config, overrides, model, dataset, trained_model, metrics, report,
                 gpus=gpus, nodes=nodes, trainjob_overrides=trainjob_overrides)
