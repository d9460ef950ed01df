"""The ``register`` component: publish the final model and its reports in the artifact store.

A thin wrapper of ``charops.registry.register``: the trained Model, the prepared Dataset (for
its manifest hash) and the evaluation results in; the model goes to
``models/<name>/<version>/model`` of the store named by ``store`` (empty: charops' default
store, i.e. the KFP object store in a cluster and ``./.charops/store`` locally), the reports beside it, and a registry entry (metrics + lineage) to
``registry/<name>/<version>.json``, with the model card (``card.json``, ``README.md``) beside the
model. Outputs the entry as an artifact, the model card as Markdown, and the version and model
URI as parameters (for a later deploy step)::

    from kfp import local
    from charops.components.register.component import register
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    register(model=..., dataset=..., evaluation=..., name="charops-chat", store="/tmp/store",
             base_model="charops:tiny", pipeline_version="", run_id="r1", run_name="r1")
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def register(model: Input[Model], dataset: Input[Dataset], evaluation: Input[Artifact],
             name: str, store: str, base_model: str, pipeline_version: str, run_id: str,
             run_name: str, entry: Output[Artifact], report: Output[Markdown],
             ) -> NamedTuple("Outputs", [("version", int), ("model_uri", str)]):
    """Register ``model`` as the next version of ``name`` in ``store``.

    Args:
        model: the model to publish
        dataset: for lineage: its ``manifest.json`` content hash
        evaluation: the ``results`` of ``evaluate`` (metrics.json is read, the folder published)
        name: registry name (``model_name`` pipeline parameter)
        store: store URL; empty: ``charops.storage.open_store``'s default (``./.charops/store``
            here, the KFP object store in a cluster)
        base_model: lineage: the base model reference
        pipeline_version: lineage: the compiled pipeline's version
        run_id: lineage: the KFP run id (the pipelines pass the placeholder)
        run_name: lineage: the KFP run name (the pipelines pass the placeholder)
        entry: the registry entry JSON; metadata: name, version, model_uri, sha256
        report: the model card (``README.md``)

    Returns:
        version: the version registered, for a following deploy step
        model_uri: where the model was published, for a following deploy step
    """
    import json
    from collections import namedtuple
    from pathlib import Path

    from charops.components.common import numeric_leaves, write_markdown
    from charops.io import write_json
    from charops.registry import get_card
    from charops.registry import register as publish
    from charops.registry.card import card_markdown
    from charops.storage import open_store

    results = json.loads((Path(evaluation.path) / "metrics.json").read_text(encoding="utf-8"))
    manifest = json.loads((Path(dataset.path) / "manifest.json").read_text(encoding="utf-8"))
    # Numbers only (no sample replies or configs): what the model is compared by.
    metrics = numeric_leaves({k: results[k] for k in ("model", "baseline", "loss_delta")
                              if k in results})
    lineage = {"dataset_sha256": manifest["content_sha256"], "base_model": base_model,
               "pipeline_version": pipeline_version, "run_id": run_id, "run_name": run_name}
    st = open_store(store or None)
    published = publish(st, model.path, name, metrics, lineage, reports_dir=evaluation.path)
    write_json(entry.path, published)
    entry.metadata.update({"name": published["name"], "version": published["version"],
                           "model_uri": published["model_uri"],
                           "sha256": published["model_sha256"]})
    write_markdown(report, card_markdown(get_card(st, name, published["version"])))
    outputs = namedtuple("Outputs", ["version", "model_uri"])
    return outputs(published["version"], published["model_uri"])
