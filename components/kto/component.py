"""The ``kto`` component: KTO on unpaired feedback (liked and disliked replies).

A thin wrapper of ``charops.train.kto.run`` (config ``KTOConfig``, presets under
``configs/kto/``). The input Model is the policy's start and the frozen reference; the dataset
is a ``feedback_export`` in KTO form (``kto/{train,validation}.jsonl``)::

    from kfp import local
    from charops.components.kto.component import kto
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    kto(model=export_task.outputs["production_model"], dataset=export_task.outputs["dataset"],
        config="tiny-cpu", overrides=[])
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def kto(model: Input[Model], dataset: Input[Dataset], config: str, overrides: list,
        trained_model: Output[Model], metrics: Output[Metrics], report: Output[Markdown],
        gpus: int = -1, nodes: int = 1, trainjob_overrides: list = []):  # noqa: B006 (KFP reads the default; never mutated)
    """Optimise ``model`` on replies labelled desirable or undesirable, ``model`` as reference.

    Args:
        model: the model to train (the production model), and the reference
        dataset: a feedback export in KTO form (from ``feedback_export``)
        config: ``configs/kto/`` preset (``tiny-cpu``)
        overrides: ``key=value`` overrides (e.g. ``["max_steps=20", "beta=0.2"]``); ``model``,
            ``dataset``, ``output_dir`` are set from the artifacts
        gpus: processes in the step's pod: -1 = one per visible GPU; more than one runs under ``torchrun``
        nodes: more than 1: a Kubeflow Trainer TrainJob of ``nodes`` x ``gpus`` processes instead
        trainjob_overrides: ``key=value`` overrides of ``TrainJobConfig`` for ``nodes > 1``
        trained_model: the trained Hugging Face directory (with ``training_summary.json``);
            metadata: ``sha256``, ``stage``, ``config``, ``overrides``, ``base_model``
        metrics: steps, final loss, tokens and throughput, wall time
        report: the same numbers and the full config
    """
    from charops.components.common import run_training

    run_training("kto", config, overrides, model, dataset, trained_model, metrics, report,
                 gpus=gpus, nodes=nodes, trainjob_overrides=trainjob_overrides)
