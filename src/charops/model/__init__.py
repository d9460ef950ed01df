"""Base models: build the embedded default (``init``), resolve any model reference (``load``).

    charops model init --output runs/base
    python -c "from charops.model import tokenizer_sha256; print(tokenizer_sha256('runs/base'))"
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from charops.errors import CharopsError

# What makes two tokenizers interchangeable: vocabulary, merges, special tokens (tokenizer.json,
# tokenizer_config.json) and the chat template that decides which tokens are supervised.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def tokenizer_sha256(model_dir: str | Path) -> str:
    """Hash identifying a model directory's tokenizer and chat template (files that exist, by name)."""
    model_dir = Path(model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        raise CharopsError(f"model '{model_dir}' has no tokenizer.json (a fast tokenizer is required)")
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        p = model_dir / name
        if p.is_file():
            h.update(name.encode())
            h.update(b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()
