"""What a model directory holds, without loading its weights: ``charops model inspect DIR``.

    charops model inspect runs/dpo/model
    charops model inspect runs/base --json
    python -c "from charops.model.inspection import inspect_model; print(inspect_model('runs/base'))"

Architecture and sizes come from ``config.json``; the parameter count and dtypes from the
safetensors headers (a few KB read per file, so a 7B model is inspected in milliseconds); the
tokenizer and its chat template are loaded to check what training needs: the ``{% generation %}``
markers and that they mark the assistant's tokens of a probe conversation. Characters are the
model's ``characters.jsonl`` (the training stages copy the dataset's); the training record is
its ``training_summary.json``.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from charops.errors import CharopsError
from charops.io import read_jsonl

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
# A two-turn probe: the assistant's tokens of both replies must be marked.
_PROBE = [{"role": "system", "content": "You are Ada."}, {"role": "user", "content": "Hello?"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And?"},
          {"role": "assistant", "content": "Goodbye."}]


def safetensors_sizes(model_dir: Path) -> tuple[int, dict[str, int]]:
    """(parameter count, parameters per dtype) from the headers of every ``*.safetensors`` file."""
    total, by_dtype = 0, {}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CharopsError(f"model '{model_dir}' has no *.safetensors weights")
    for path in files:
        with open(path, "rb") as fh:
            head = fh.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            try:
                header = json.loads(fh.read(min(length, 100_000_000)))  # the format caps headers at 100 MB
            except ValueError:
                header = None
        if not isinstance(header, dict):
            raise CharopsError(f"{path}: not a safetensors file (its header is not a JSON object)")
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for dim in tensor["shape"]:
                n *= dim
            total += n
            by_dtype[tensor["dtype"]] = by_dtype.get(tensor["dtype"], 0) + n
    return total, by_dtype


def chat_template_report(model_dir: Path) -> dict:
    """The tokenizer and what its chat template marks as the assistant's (training needs both)."""
    from charops.model import tokenizer_sha256
    from charops.model.load import load_tokenizer

    tok = load_tokenizer(model_dir)
    template = tok.chat_template
    report = {"vocab_size": len(tok), "tokenizer_sha256": tokenizer_sha256(model_dir),
              "eos_token": tok.eos_token, "pad_token": tok.pad_token,
              "generation_markers": bool(_GENERATION.search(template)), "assistant_tokens_marked": 0}
    if report["generation_markers"]:
        out = tok.apply_chat_template(_PROBE, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        marked = [tid for tid, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
        report["assistant_tokens_marked"] = len(marked)
        report["assistant_text"] = tok.decode(marked)
    return report


def inspect_model(model_dir: str | Path) -> dict:
    """Architecture, sizes, parameters, tokenizer, chat template markers, characters, training."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise CharopsError(f"'{model_dir}' is not a model directory (no config.json)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    text = config.get("text_config", config)  # multimodal configs nest the language model's
    parameters, by_dtype = safetensors_sizes(model_dir)
    characters = model_dir / "characters.jsonl"
    names = [p.get("name", "?") for p in read_jsonl(characters)] if characters.is_file() else []
    summary_path = model_dir / "training_summary.json"
    training = None
    if summary_path.is_file():
        s = json.loads(summary_path.read_text(encoding="utf-8"))
        training = {"stage": s.get("stage"), "steps": s.get("steps"), "final_loss": s.get("final_loss"),
                    "base_model": (s.get("base_model") or {}).get("ref"),
                    "dataset_content_sha256": (s.get("dataset") or {}).get("content_sha256")}
    return {
        "model_dir": str(model_dir),
        "architecture": (config.get("architectures") or [config.get("model_type", "?")])[0],
        "model_type": config.get("model_type"),
        "hidden_size": text.get("hidden_size"),
        "layers": text.get("num_hidden_layers"),
        "attention_heads": text.get("num_attention_heads"),
        "max_position_embeddings": text.get("max_position_embeddings"),
        "parameters": parameters,
        "dtypes": by_dtype,
        "tokenizer": chat_template_report(model_dir),
        "characters": names,
        "training": training,
    }


def describe(info: dict) -> list[str]:
    """``inspect_model``'s answer as the lines ``charops model inspect`` prints."""
    tok = info["tokenizer"]
    dtypes = ", ".join(f"{k} {v:,}" for k, v in sorted(info["dtypes"].items()))
    lines = [f"{info['model_dir']}: {info['architecture']} ({info['model_type']}), {info['parameters']:,} parameters "
             f"({dtypes})",
             f"  size: hidden {info['hidden_size']}, {info['layers']} layers, {info['attention_heads']} heads, "
             f"{info['max_position_embeddings']} positions",
             f"  tokenizer: vocabulary {tok['vocab_size']:,}, eos {tok['eos_token']!r}, pad {tok['pad_token']!r}, "
             f"sha256 {tok['tokenizer_sha256'][:16]}"]
    if tok["generation_markers"]:
        lines.append(f"  chat template: {{% generation %}} markers, {tok['assistant_tokens_marked']} assistant "
                     f"tokens marked in a two-reply probe: {tok['assistant_text']!r}")
    else:
        lines.append("  chat template: no {% generation %} markers; SFT cannot find the assistant's tokens "
                     "(charops model import adds them)")
    names = info["characters"]
    lines.append(f"  characters ({len(names)}): {', '.join(names)}" if names else "  characters: none")
    if info["training"]:
        t = info["training"]
        loss = f"{t['final_loss']:.4f}" if isinstance(t["final_loss"], (int, float)) else "n/a"
        lines.append(f"  trained: {t['stage']}, {t['steps']} steps, final loss {loss}, from {t['base_model']}")
    return lines
