"""The ``dpo`` component: direct preference optimisation against the SFT model.

A thin wrapper of ``charops.train.dpo.run`` (config ``DPOConfig``, presets under
``configs/dpo/``). The input Model (the SFT model) is both the policy's starting point and the
frozen reference ``pi_ref`` of ``L_DPO``; the dataset's ``dpo/`` split gives the pairs::

    from kfp import local
    from charops.components.dpo.component import dpo
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    dpo(model=sft_task.outputs["trained_model"], dataset=..., config="tiny-cpu", overrides=[])
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def dpo(model: Input[Model], dataset: Input[Dataset], config: str, overrides: list,
        trained_model: Output[Model], metrics: Output[Metrics], report: Output[Markdown],
        gpus: int = -1, nodes: int = 1, trainjob_overrides: list = []):  # noqa: B006 (KFP reads the default; never mutated)
    """Optimise ``model`` on preference pairs, with ``model`` itself as the reference.

    The inputs and outputs every training component has are described in
    ``charops.pipeline.component_docs.TRAINING`` (the README shows them).

    Args:
        model: the model to train, and the reference
        config: ``configs/dpo/`` preset (``tiny-cpu``, ``smollm2-cpu``, ``qwen2-7b-zero3``, ...)
        overrides: ``key=value`` overrides (e.g. ``["max_steps=20", "beta=0.2"]``);
            ``model``, ``dataset``, ``output_dir``, ``ref_model`` are set from the artifacts
    """
    from charops.components.common import run_training

    run_training("dpo", config, overrides, model, dataset, trained_model, metrics, report,
                 gpus=gpus, nodes=nodes, trainjob_overrides=trainjob_overrides,
                 extra_uris={"ref_model": model.uri}, ref_model=model.path)
