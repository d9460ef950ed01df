"""``charops model import``: a GGUF file or a Hugging Face directory -> a charops model directory.

The result is an ordinary Hugging Face directory (``model.safetensors``, tokenizer files,
``chat_template.jinja``, ``generation_config.json``) plus ``charops_import.json`` recording where
it came from (path, sha256, catalog entry) and what was done to it. Two things are done:

- **GGUF weights are dequantised** (transformers' ``gguf_file=`` loading, with the ``gguf``
  package) to float32 or bfloat16 and saved as safetensors, so training and serving never touch
  the quantised file again.
- **The chat template gets ``{% generation %}`` markers** (charops.model.template_patch): the
  model's own template patched where that is provably safe, or ``--chat-template FILE``; the
  assistant-mask check then proves the supervised tokens are exactly the replies.

It also writes generation defaults a chat needs: stop at the end-of-turn token, sampling with
temperature/top-p, a repetition penalty (small models loop without one).

    charops model import SmolLM2-135M-Instruct.Q4_1.gguf --output runs/smollm2
    charops model import charops:smollm2-135m --output runs/smollm2     # from the catalog
    charops model import some/hf-dir --output /tmp/out --dtype bfloat16
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from charops.errors import CharopsError
from charops.io import (
    FILE_MODE,
    atomic_dir,
    check_output,
    sha256_file,
    sha256_tree,
    write_json,
    write_text,
)

DTYPES = ("float32", "bfloat16")
# Sampling defaults written into generation_config.json (and so recorded with the model): what
# small chat models need to hold a conversation rather than loop.
GENERATION_DEFAULTS: dict[str, Any] = {
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 50,
    "repetition_penalty": 1.15,
    "max_new_tokens": 256,
}


def _source(src: Path) -> tuple[str, Path, str | None]:
    """``(kind, folder to load from, gguf file name or None)``."""
    if src.is_file():
        if src.suffix.lower() != ".gguf":
            raise CharopsError(f"'{src}' is a file but not a .gguf file; pass a GGUF file or a Hugging Face model directory")
        return "gguf", src.parent, src.name
    if src.is_dir():
        if not (src / "config.json").is_file():
            raise CharopsError(f"'{src}' has no config.json: not a Hugging Face model directory")
        return "hf", src, None
    raise CharopsError(f"'{src}' does not exist; pass a GGUF file, a Hugging Face model directory or a charops: reference")


def _read_template(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise CharopsError(f"chat template file '{p}' does not exist")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CharopsError(f"chat template file '{p}' is not UTF-8 (byte {exc.start})") from None


def import_model(src: str | Path, output: str | Path, *, dtype: str = "float32",
                 chat_template: str | None = None, chat_template_file: str | Path | None = None,
                 overwrite: bool = False, catalog: dict | None = None, progress: bool = True) -> dict:
    """Import ``src`` (GGUF file or HF directory) into ``output``; return the summary written as
    ``charops_import.json``. ``chat_template`` (text) or ``chat_template_file`` replaces the model's own.

    The steps: check the arguments and the output, load the tokenizer and patch its chat
    template (``_load_tokenizer``), load the weights (``_load_model``), set the generation
    settings (``_generation_settings``), write the directory atomically (``_save``).
    """
    if dtype not in DTYPES:
        raise CharopsError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    src, out = Path(src).expanduser(), Path(output).expanduser()
    kind, folder, gguf_name = _source(src)
    # out must not be src, hold it (the GGUF's folder) or lie inside it
    check_output(out, inputs={"the source": src}, overwrite=overwrite)
    template_origin = "model" if chat_template is None and chat_template_file is None else \
        "file" if chat_template_file is not None else "catalog"
    if chat_template_file is not None:
        chat_template = _read_template(chat_template_file)

    from transformers.utils import logging as hf_logging

    source_sha = sha256_file(src) if kind == "gguf" else sha256_tree(src)
    kwargs = {"gguf_file": gguf_name} if gguf_name else {}
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        tokenizer, template, family, end_of_turn = _load_tokenizer(src, folder, kwargs, chat_template)
        model = _load_model(src, folder, kwargs, dtype)
    finally:
        if not progress:
            hf_logging.enable_progress_bar()
    eos_ids, pad_id = _generation_settings(model, tokenizer, end_of_turn)
    summary: dict[str, Any] = {
        "source": {"kind": kind, "path": str(src.resolve()), "sha256": source_sha, **(catalog or {})},
        "architecture": model.config.architectures[0] if model.config.architectures else type(model).__name__,
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": dtype,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": getattr(model.config, "max_position_embeddings", None),
        "chat_template": {"family": family, "from": template_origin, "end_of_turn": end_of_turn},
        "generation": {"eos_token_id": eos_ids, "pad_token_id": pad_id, **GENERATION_DEFAULTS},
    }
    _save(out, overwrite, model, tokenizer, template, summary)
    return {"output_dir": str(out), **summary}


def _load_tokenizer(src: Path, folder: Path, kwargs: dict, chat_template: str | None):
    """The fast tokenizer with its chat template (``chat_template`` when given) patched with
    ``{% generation %}`` markers and checked; also the template family and end-of-turn token."""
    from transformers import AutoTokenizer

    from charops.model.template_patch import check_assistant_mask, patch_chat_template

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    except ImportError as exc:  # the gguf package is missing
        raise CharopsError(f"loading '{src}' needs a package that is not installed: {exc}") from None
    except (ValueError, OSError) as exc:
        raise CharopsError(f"cannot read the tokenizer of '{src}': {str(exc).splitlines()[0]}") from None
    if not tokenizer.is_fast:
        raise CharopsError(f"'{src}': charops needs a fast (Rust) tokenizer")
    special = dict(tokenizer.special_tokens_map)
    template, family = patch_chat_template(chat_template if chat_template is not None else tokenizer.chat_template,
                                           **special)
    tokenizer.chat_template = template
    return tokenizer, template, family, check_assistant_mask(tokenizer)


def _load_model(src: Path, folder: Path, kwargs: dict, dtype: str):
    """The causal LM in ``dtype``, as a plain (saveable) model even when read from a GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), **kwargs)
    except (ValueError, OSError, KeyError) as exc:
        raise CharopsError(f"cannot load the weights of '{src}': {str(exc).splitlines()[0]}") from None
    # A GGUF-loaded model remembers its quantised origin and refuses to save; its tensors are
    # already dequantised, so dropping the marker is all it takes.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = dtype
    return model


def _generation_settings(model, tokenizer, end_of_turn: str) -> tuple[list[int], int]:
    """Stop at the end of a turn (and at EOS); pad with the pad token, else the end of turn."""
    from transformers import GenerationConfig

    eot_id = tokenizer.convert_tokens_to_ids(end_of_turn)
    eos_ids = [eot_id] + [i for i in (tokenizer.eos_token_id,) if i is not None and i != eot_id]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot_id
    if tokenizer.pad_token is None:
        tokenizer.pad_token = end_of_turn
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids, pad_token_id=pad_id, **GENERATION_DEFAULTS)
    return eos_ids, pad_id


def _save(out: Path, overwrite: bool, model, tokenizer, template: str, summary: dict) -> None:
    """The model directory, written whole or not at all, with ``charops_import.json``."""
    from transformers.utils import logging as hf_logging

    from charops.model import tokenizer_sha256

    with atomic_dir(out, overwrite=overwrite) as tmp:
        os.chmod(tmp, 0o755)  # a model dir is shared (serving pods, other users); mkdtemp made it 0700
        hf_logging.disable_progress_bar()
        try:
            model.save_pretrained(tmp, safe_serialization=True)
        finally:
            hf_logging.enable_progress_bar()
        tokenizer.save_pretrained(tmp)
        # transformers 5 saves the template as chat_template.jinja; make sure the patched one is there.
        write_text(tmp / "chat_template.jinja", template)
        for f in tmp.iterdir():  # safetensors writes its file 0600; a model dir is read by others
            os.chmod(f, FILE_MODE)
        summary["tokenizer_sha256"] = tokenizer_sha256(tmp)
        write_json(tmp / "charops_import.json", summary)
