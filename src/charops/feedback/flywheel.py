"""The first step of the feedback pipeline (pipelines/feedback.py): the production model and
its feedback as training data.

    from charops.feedback.flywheel import export_step
    summary = export_step("s3://charops", "charops-chat", "", "dpo", 0.1, "out/model", "out/data")

The production version of ``name`` is downloaded (checked against its registry sha256) into
``model_dir``; its feedback events since ``since`` are exported (``charops.feedback.export``)
and, for ``dpo``, prepared with that model's tokenizer (``charops.data.prepare``: the dpo
component reads a prepared dataset); ``kto`` keeps the export as it is (the kto stage tokenizes
its rows itself). Both leave ``feedback_summary.yaml`` (read = used + dropped per source) and
the production model's ``characters.jsonl`` in ``dataset_dir``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from charops.errors import CharopsError
from charops.feedback.export import FORMATS, SUMMARY, export
from charops.serve.characters import CHARACTERS_FILE as CHARACTERS


def production_model(store, name: str, dest: str | Path) -> dict:
    """Download ``name``'s production version into ``dest``; its registry entry."""
    from charops.io import sha256_tree
    from charops.registry import model_prefix
    from charops.registry.stages import production

    entry = production(store, name)
    if entry is None:
        raise CharopsError(f"'{name}' has no production version in {store.url}: the feedback "
                           "pipeline improves the production model; promote one first")
    store.download_prefix(model_prefix(name, entry["version"]), dest, overwrite=True)
    if sha256_tree(dest) != entry["model_sha256"]:
        raise CharopsError(f"'{name}' v{entry['version']}: the downloaded model does not match its "
                           "registry sha256; the store copy is damaged")
    return entry


def export_step(store_url: str, name: str, since: str, fmt: str, validation_fraction: float,
                model_dir: str | Path, dataset_dir: str | Path) -> dict:
    """Production model into ``model_dir``, training data into ``dataset_dir``; the summary."""
    from charops.storage import open_store

    if fmt not in FORMATS:
        raise CharopsError(f"feedback_format '{fmt}': use dpo or kto")
    store = open_store(store_url or None)
    entry = production_model(store, name, model_dir)
    work = Path(tempfile.mkdtemp(prefix="charops-feedback-"))
    try:
        summary = export(store, name, fmt, work / "export", since=since or None,
                         validation_fraction=validation_fraction)
        if fmt == "dpo":
            from charops.config import load_config
            from charops.data.prepare import PrepareConfig, run

            # The export is already split by conversation; prepare re-splits by id with the
            # same fraction, which also keeps the pairs of one conversation together.
            run(load_config(PrepareConfig, None, [
                f"inputs={work / 'export'}", f"model={model_dir}", f"output_dir={dataset_dir}",
                f"validation_fraction={validation_fraction}", "allow_empty_split=true",
                "progress=false", "overwrite=true"]))
        else:
            shutil.copytree(work / "export", dataset_dir, dirs_exist_ok=True)
        shutil.copy(work / "export" / SUMMARY, Path(dataset_dir) / SUMMARY)
        # The characters the feedback was given to travel on to the new version (training copies
        # the dataset's characters.jsonl into the model). They are not prepare's inputs: the
        # events' prompts already hold each rendered system prompt, which a profile would repeat.
        characters = Path(model_dir) / CHARACTERS
        if characters.is_file():
            shutil.copy(characters, Path(dataset_dir) / CHARACTERS)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["production"] = {"version": entry["version"], "model_sha256": entry["model_sha256"],
                             "model_uri": entry["model_uri"]}
    return summary
