"""The ``reward`` component: a reward model on the preference pairs, the evaluation's local judge.

A thin wrapper of ``charops.train.reward.run`` (config ``RewardConfig``, presets under
``configs/reward/``): a Model (the pipelines pass the SFT model) and the prepared Dataset (its
``dpo/`` pairs) in; the reward model (a sequence-classification model whose
``training_summary.json`` carries its held-out pair accuracy, calibration and tie margin),
Metrics and a Markdown report out. The ``evaluate`` step takes it as ``reward_model``::

    from kfp import local
    from charops.components.reward.component import reward
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    reward(model=..., dataset=..., config="tiny-cpu", overrides=["max_steps=5"])
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def reward(model: Input[Model], dataset: Input[Dataset], config: str, overrides: list,
           trained_model: Output[Model], metrics: Output[Metrics], report: Output[Markdown],
           gpus: int = -1, nodes: int = 1, trainjob_overrides: list = []):  # noqa: B006 (KFP reads the default; never mutated)
    """Train a reward model from ``model`` on the dataset's chosen/rejected replies.

    The inputs and outputs every training component has are described in
    ``charops.pipeline.component_docs.TRAINING`` (the README shows them).

    Args:
        model: the model the reward model starts from
        dataset: the prepared dataset (its ``dpo/train.jsonl``, ``dpo/validation.jsonl``)
        config: ``configs/reward/`` preset (``tiny-cpu``)
        overrides: ``key=value`` overrides (e.g. ``["max_steps=10"]``); ``model``, ``dataset``,
            ``output_dir`` are set from the artifacts
        trained_model: sequence-classification model with ``training_summary.json``
            (``reward.pair_accuracy``, ``reward.calibration``, ``reward.tie_margin``)
        metrics: steps, losses, held-out pair accuracy
    """
    from charops.components.common import run_training

    run_training("reward", config, overrides, model, dataset, trained_model, metrics, report,
                 gpus=gpus, nodes=nodes, trainjob_overrides=trainjob_overrides)
