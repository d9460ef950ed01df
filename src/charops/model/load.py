"""Resolve a base-model reference to a local Hugging Face directory, and load its tokenizer.

A reference is one of:

- a local directory holding ``config.json`` (used in place), or its ``file://`` URI (what a
  local registry entry's ``model_uri`` is);
- ``s3://bucket/prefix``: copied from the object store (charops.storage) into a cache folder;
- a Hugging Face hub id (``Qwen/Qwen2.5-0.5B-Instruct``): ``huggingface_hub.snapshot_download``.
  Only an ``org/name`` that is not a path goes to the hub: anything starting with ``/``, ``.``,
  ``~`` or ``runs/``, with more or fewer than one ``/``, or whose first part is a local folder
  is a path that does not exist; with ``HF_HUB_OFFLINE`` set the hub is never tried;
- ``charops:NAME`` (``charops:smollm2-135m``, ``charops:gemma3-270m``): a model installed from
  PyPI, imported once into the cache (charops.model.catalog).

    python -c "from charops.model.load import resolve_model; print(resolve_model('runs/base'))"
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from charops.errors import CharopsError
from charops.model.cache import default_cache_dir

# What `huggingface_hub` accepts as a repo id: "name" or "namespace/name".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check_model_dir(path: Path, ref: str) -> Path:
    if not path.is_dir():
        raise CharopsError(f"base model '{ref}' is not a directory; pass a Hugging Face model directory")
    if not (path / "config.json").is_file():
        raise CharopsError(f"base model '{ref}' has no config.json: not a Hugging Face model directory "
                           "(expected config.json, model weights and tokenizer files)")
    return path


def _hub_id(ref: str) -> bool:
    """Whether ``ref`` is meant as a hub repo id: exactly ``org/name``, with no local folder
    ``org`` (then it is a path inside that folder) and none of a path's marks."""
    if ref.startswith(("/", ".", "~", "runs/")) or "\\" in ref or ref.count("/") != 1:
        return False
    return bool(_HUB_ID.match(ref)) and not Path(ref.split("/", 1)[0]).exists()


def resolve_model(ref: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory for ``ref``; raises CharopsError (one line) when it cannot be had."""
    ref = str(ref)
    from charops.model import catalog  # charops:NAME models installed from PyPI, imported once

    if catalog.is_catalog_ref(ref):
        return catalog.resolve(ref, Path(cache_dir) if cache_dir else None)
    if ref.startswith("s3://"):
        return _from_s3(ref, Path(cache_dir) if cache_dir else default_cache_dir())
    # file:// URIs are what a local registry entry's model_uri is: the directory in place.
    path = Path(unquote(urlparse(ref).path)) if ref.startswith("file://") else Path(ref).expanduser()
    if path.exists():
        return _check_model_dir(path, ref)
    if not _hub_id(ref):
        raise CharopsError(f"base model '{ref}' does not exist (tried as a local path: {path.absolute()}); "
                           "pass a model directory, an s3:// prefix or a Hugging Face hub id org/name "
                           "(run `charops model init` to build the default one)")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off"):
        raise CharopsError(f"base model '{ref}': no local directory of that name, and HF_HUB_OFFLINE is set, "
                           "so the Hugging Face hub was not tried; pass a local model directory or an s3:// "
                           "prefix, or unset HF_HUB_OFFLINE")
    return _from_hub(ref, cache_dir)


def _from_s3(url: str, cache_dir: Path) -> Path:
    from charops.storage import open_store  # only S3 references need the storage layer

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket or not prefix.strip("/"):
        raise CharopsError(f"base model '{url}': expected s3://BUCKET/PREFIX")
    # One folder per URL, fetched again each time so a prefix republished in place is never
    # stale; download_prefix verifies every file and only then moves the folder into place.
    dest = cache_dir / hashlib.sha256(url.encode()).hexdigest()[:16]
    open_store(f"s3://{bucket}").download_prefix(prefix.strip("/"), dest, overwrite=True)
    return _check_model_dir(dest, url)


def _from_hub(repo_id: str, cache_dir: str | Path | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as exc:  # offline, unknown repo, gated, ...: all end the same way for the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CharopsError(f"base model '{repo_id}': no local directory of that name, so the Hugging Face hub "
                           f"was tried (repo id {repo_id}) and failed ({reason}); pass a local model directory "
                           "or an s3:// prefix (`charops model init` builds the default one)") from None
    return _check_model_dir(Path(path), repo_id)


def quiet_progress_bars() -> None:
    """Turn off the progress bars transformers and datasets draw themselves (loading weights,
    TRL's dataset passes): a stage whose own ``progress`` is off (``-q``) prints errors only."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def load_tokenizer(model_dir: str | Path):
    """The model's tokenizer (AutoTokenizer), which must be fast and carry a chat template.

    The one loader of data prepare, training, evaluation and serving, so all of them pad with
    the same token: the tokenizer's own pad token, else ``<|endoftext|>`` where the vocabulary
    has it (the document separator of packed pretraining), else eos. Padding is masked
    everywhere, so which token it is only matters in being the same for every stage.
    """
    from transformers import AutoTokenizer

    from charops.model.chat_template import ENDOFTEXT

    model_dir = Path(model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        raise CharopsError(f"model '{model_dir}' has no tokenizer.json: charops needs a fast (Rust) tokenizer")
    tok = AutoTokenizer.from_pretrained(model_dir)
    if not tok.chat_template:
        raise CharopsError(f"model '{model_dir}' has no chat template (chat_template.jinja or in tokenizer_config.json)")
    if tok.pad_token is None:
        if ENDOFTEXT in tok.get_vocab():
            tok.pad_token = ENDOFTEXT
        elif tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        else:
            raise CharopsError(f"model '{model_dir}': its tokenizer has no pad, {ENDOFTEXT} or eos token to pad "
                               "batches with; set pad_token in tokenizer_config.json")
    return tok


def cpu_bf16_supported(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """The CPU has bfloat16 dot products (AVX512-BF16 or AMX-BF16), read from its flags (Linux)."""
    try:
        flags = set(" ".join(line.split(":", 1)[1] for line in Path(cpuinfo).read_text().splitlines()
                             if line.startswith("flags")).split())
    except (OSError, IndexError):
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


DTYPES = ("auto", "float32", "bfloat16")


def inference_dtype(asked: str = "auto"):
    """The torch dtype to run a model in for inference (evaluation): ``auto`` is bfloat16 on a
    GPU that supports it, else float32; ``bfloat16`` is bfloat16 on such a GPU or on a CPU with
    bfloat16 dot products (avx512_bf16 or amx_bf16: about 1.8x float32 on a 135M model there),
    else float32 with a one-line note; ``float32`` is float32."""
    import torch

    if asked not in DTYPES:
        raise CharopsError(f"dtype: must be one of {', '.join(DTYPES)}, got '{asked}'")
    if asked == "float32":
        return torch.float32
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if asked == "bfloat16":
        if cpu_bf16_supported():
            return torch.bfloat16
        _note_no_bf16()
    return torch.float32


@functools.cache
def _note_no_bf16() -> None:
    print("note: dtype bfloat16: this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16); "
          "running in float32", file=sys.stderr, flush=True)
