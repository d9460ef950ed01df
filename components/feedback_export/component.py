"""The ``feedback_export`` component: the production model and its feedback as training data.

A thin wrapper of ``charops.feedback.flywheel.export_step``: downloads ``model_name``'s
production version from the registry in ``store``, exports its feedback events since ``since``
as DPO pairs (prepared with the model's tokenizer) or KTO rows (``feedback_format``)::

    from kfp import local
    from charops.components.feedback_export.component import feedback_export
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    feedback_export(store="/tmp/store", model_name="charops-chat", since="", feedback_format="dpo",
                    validation_fraction=0.1)
"""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def feedback_export(store: str, model_name: str, since: str, feedback_format: str,
                    validation_fraction: float, production_model: Output[Model],
                    dataset: Output[Dataset], metrics: Output[Metrics], summary: Output[Markdown]):
    """Fetch the production model and turn its feedback into a training dataset.

    Args:
        store: the artifact store holding the registry and the feedback events
        model_name: registry name whose production version and events are used
        since: only events at or after this day or ISO time ("" = all)
        feedback_format: ``dpo`` (pairs, prepared for the dpo component) or ``kto`` (unpaired rows)
        validation_fraction: share of conversations held out for validation
        production_model: the production version's Hugging Face directory; metadata: ``sha256``,
            ``base_model`` (its registry URI), ``version``
        dataset: ``dpo/`` prepared split or ``kto/`` rows, with ``feedback_summary.yaml``
        metrics: events read, used, dropped; rows per split
        summary: the counts per source with the reasons for dropping
    """
    import json

    from charops.components.common import describe_model, log_metrics, write_markdown
    from charops.feedback.flywheel import export_step

    result = export_step(store, model_name, since, feedback_format, validation_fraction,
                         production_model.path, dataset.path)
    describe_model(production_model, production_model.path,
                   base_model=result["production"]["model_uri"], version=result["production"]["version"])
    log_metrics(metrics, {"events_read": result["read"], "events_used": result["used"],
                          "events_dropped": result["dropped"], "train_rows": result["rows"]["train"],
                          "validation_rows": result["rows"]["validation"]})
    write_markdown(summary, "# Feedback export\n\n```json\n" + json.dumps(result, indent=2, ensure_ascii=False)
                   + "\n```\n")
