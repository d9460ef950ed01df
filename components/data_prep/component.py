"""The ``data_prep`` component: character data -> a prepared, tokenized Dataset.

A thin wrapper of ``charops.data.prepare.run`` (config ``PrepareConfig``, presets under
``configs/data/``): imports, validates, deduplicates and splits the character profiles,
dialogues and preference pairs, renders system prompts and tokenizes with the input Model's
tokenizer (so training refuses nothing later). ``data`` empty = the bundled samples; else a
file/directory path or an ``s3://`` prefix. Outputs the Dataset (the prepared directory with
its ``manifest.json``), Metrics (counts, token statistics) and a Markdown summary::

    from kfp import local
    from charops.components.data_prep.component import data_prep
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    data_prep(model=base_task.outputs["model"], data="", config="default", overrides=[])
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def data_prep(model: Input[Model], data: str, config: str, overrides: list,
              dataset: Output[Dataset], metrics: Output[Metrics], summary: Output[Markdown]):
    """Prepare ``data`` (or the bundled samples) with ``model``'s tokenizer.

    Args:
        model: whose tokenizer and chat template are used (from ``base_model``)
        data: empty: the bundled samples; else a file or directory path, or an
            ``s3://bucket/prefix`` published to the store (downloaded first)
        config: ``configs/data/`` preset (``default``)
        overrides: ``key=value`` overrides of ``PrepareConfig`` (``model``, ``output_dir`` and
            ``inputs`` are set from the artifacts and refused here)
        dataset: the dataset directory (``manifest.json``, ``sft/``, ``dpo/``, ``pretrain/``,
            ``eval/``); metadata: ``content_sha256``, ``tokenizer_sha256``, ``data``
        metrics: record counts (read/accepted/rejected, per split) and token statistics
        summary: the same numbers and the config
    """
    from charops.components.common import (
        fetch_data,
        log_metrics,
        stage_config,
        summary_markdown,
        write_markdown,
    )
    from charops.config import to_dict
    from charops.data.prepare import PrepareConfig, run

    paths = {"model": model.path, "output_dir": dataset.path}
    if data:
        paths["inputs"] = [fetch_data(data)]
    cfg = stage_config(PrepareConfig, config, overrides, **paths)
    manifest = run(cfg)
    numbers = {"counts": manifest["counts"], "tokens": manifest["tokens"]}
    log_metrics(metrics, numbers)
    dataset.metadata.update({"content_sha256": manifest["content_sha256"],
                             "tokenizer_sha256": manifest["tokenizer"]["sha256"],
                             "data": data or "bundled samples"})
    write_markdown(summary, summary_markdown("Prepared dataset", numbers, to_dict(cfg)))
