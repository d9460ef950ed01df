"""A training stage's inputs, resolved and checked before any heavy import or work.

Public names::

    from charops.train.inputs import Inputs, prepare_inputs, check_rows
    inputs, extra = prepare_inputs(cfg, {"ref_model": cfg.ref_model})   # extra: {"ref_model": Path}
    check_rows(inputs.train_rows, ("prompt", "chosen", "rejected"), "<dataset>/dpo/train.jsonl")

``prepare_inputs`` resolves the base model (local dir, ``s3://``, hub id) and the dataset (a
prepared dataset directory; an ``s3://bucket/prefix`` where one was published, downloaded to
``output_dir/dataset``; or a raw file that ``charops.data.prepare`` turns into one there), refuses a dataset tokenized with another tokenizer, and reads the
stage's split (``<dataset>/<cfg.split_dir>/train.jsonl`` and ``validation.jsonl``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from charops.config import load_config
from charops.errors import CharopsError, DataError
from charops.io import read_jsonl, sha256_file
from charops.train.config import TrainConfig


@dataclass
class Inputs:
    """Everything resolved and checked before training starts."""

    model_dir: Path
    dataset_dir: Path
    manifest: dict
    manifest_sha256: str
    tokenizer_sha256: str
    train_rows: list[dict]
    validation_rows: list[dict]


def prepare_inputs(cfg: TrainConfig, extra_models: dict[str, str] | None = None) -> tuple[Inputs, dict[str, Path]]:
    """Resolve model and dataset and check they belong together; no training import happens here.

    ``extra_models`` (e.g. DPO's ``{"ref_model": ...}``) are resolved too and must share the
    base model's tokenizer. Raises CharopsError with a one-line message on any problem.
    """
    from charops.model import tokenizer_sha256
    from charops.model.load import quiet_progress_bars, resolve_model

    if not cfg.progress:
        quiet_progress_bars()
    model_dir = resolve_model(cfg.model)
    tok_sha = tokenizer_sha256(model_dir)
    extra: dict[str, Path] = {}
    for key, ref in (extra_models or {}).items():
        extra[key] = resolve_model(ref)
        other = tokenizer_sha256(extra[key])
        if other != tok_sha:
            raise CharopsError(f"{key} '{ref}' has a different tokenizer (sha256 {other[:12]}) than model "
                               f"'{cfg.model}' ({tok_sha[:12]}); both must come from the same base model")

    dataset_dir = resolve_dataset(cfg, model_dir)
    manifest_path = dataset_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    data_tok = manifest.get("tokenizer", {}).get("sha256")
    if data_tok != tok_sha:
        raise DataError(f"dataset '{dataset_dir}' was tokenized with tokenizer {str(data_tok)[:12]} but model "
                        f"'{cfg.model}' has tokenizer {tok_sha[:12]}; re-run `charops data prepare` with this model")
    train_path = dataset_dir / cfg.split_dir / "train.jsonl"
    if not train_path.is_file():
        raise DataError(f"dataset '{dataset_dir}' has no {cfg.split_dir}/train.jsonl; it holds no "
                        f"{cfg.stage} data (prepare it from records of that kind)")
    train_rows = list(read_jsonl(train_path))
    if not train_rows:
        raise DataError(f"{train_path}: no rows to train on")
    val_path = dataset_dir / cfg.split_dir / "validation.jsonl"
    val_rows = list(read_jsonl(val_path)) if val_path.is_file() else []
    return Inputs(model_dir, dataset_dir, manifest, sha256_file(manifest_path), tok_sha, train_rows, val_rows), extra


def resolve_dataset(cfg: TrainConfig, model_dir: Path) -> Path:
    """A prepared dataset directory as is; an ``s3://`` one is downloaded and a raw file prepared
    first, both into output_dir/dataset."""
    if cfg.dataset.startswith("s3://"):
        return fetch_dataset(cfg.dataset, Path(cfg.output_dir) / "dataset")
    p = Path(cfg.dataset)
    if p.is_dir():
        if not (p / "manifest.json").is_file():
            raise DataError(f"dataset '{p}' has no manifest.json: not a prepared dataset directory "
                            "(run `charops data prepare`, or pass a raw data file)")
        return p
    if p.is_file():
        from charops.data.prepare import EmptySplitError, PrepareConfig
        from charops.data.prepare import run as prepare

        out = Path(cfg.output_dir) / "dataset"
        try:
            prepare(load_config(PrepareConfig, {"inputs": [str(p)], "model": str(model_dir),
                                                "output_dir": str(out), "overwrite": True,
                                                "progress": cfg.progress}))
        except EmptySplitError as exc:
            # The data settings (and --allow-empty-split) belong to `charops data prepare`, not to
            # the train command that prepared this file with the defaults.
            raise DataError(f"dataset '{p}' (a raw data file, prepared with the default data settings): "
                            f"{exc.problem}; add data, or prepare it yourself (`charops data prepare {p} "
                            f"--model {model_dir} --out DIR`, where validation_fraction, holdout_characters "
                            "and --allow-empty-split can be set) and train with dataset=DIR") from None
        return out
    raise DataError(f"dataset '{cfg.dataset}' does not exist; pass a prepared dataset directory or a raw data file")


def fetch_dataset(url: str, dest: Path) -> Path:
    """A prepared dataset published at ``s3://BUCKET/PREFIX`` (``charops store put``), in ``dest``.

    Only a published prefix is read (its ``_SUCCESS`` manifest lists every file and checksum), so
    a half-uploaded dataset never is. The ranks of one node share ``dest``: under a lock the first
    downloads it and the others, like a resumed run, find the same manifest.json and reuse it.
    """
    import fcntl

    from charops.storage import open_store
    from charops.storage.store import read_manifest

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    if not bucket or not prefix:
        raise DataError(f"dataset '{url}': expected s3://BUCKET/PREFIX")
    store = open_store(f"s3://{bucket}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        want = read_manifest(store, prefix)["files"].get("manifest.json", {}).get("sha256")
        if want is None:
            raise DataError(f"dataset '{url}' has no manifest.json: not a prepared dataset "
                            "(publish the output of `charops data prepare` with `charops store put`)")
        have = dest / "manifest.json"
        if not (have.is_file() and sha256_file(have) == want):
            store.download_prefix(prefix, dest, overwrite=True)
    return dest


def check_rows(rows: list[dict], keys: tuple[str, ...], where: str) -> None:
    """Each row must carry ``keys``; says which row and key when one does not."""
    for i, row in enumerate(rows):
        for key in keys:
            if key not in row:
                raise DataError(f"{where} row {i + 1} (id {row.get('id', '?')}): missing field '{key}'; "
                                "re-run `charops data prepare`")
