"""The ``model init`` stage: build charops' embedded default base model from nothing.

No model hub is reachable on the machines charops must run on, so the default base model is
*built*: a byte-level BPE tokenizer trained with ``tokenizers`` on the bundled corpus, the
ChatML chat template with ``{% generation %}`` markers (charops.model.chat_template), and a
Llama or Qwen2 causal LM with random weights from a transformers config. The result is an
ordinary Hugging Face model directory; everything downstream treats it like any other.

    charops model init --config tiny --output runs/base
    python -m charops.model.init --config micro --output /tmp/base seed=1

The same config and corpus give byte-identical files (checked by tests/unit/test_model_init.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from charops.errors import CharopsError, ConfigError
from charops.io import atomic_dir, check_output, sha256_tree, write_json
from charops.model.chat_template import CHATML_TEMPLATE, ENDOFTEXT, IM_END, SPECIAL_TOKENS

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"
# Bundled text the default tokenizer learns from; the ones that exist are used, in this order.
DEFAULT_CORPUS = ("corpus.jsonl", "dialogues.jsonl", "characters.jsonl", "preferences.jsonl")
# JSON keys whose values are labels, not language: they would teach the tokenizer "user" merges.
_NON_TEXT_KEYS = frozenset({"id", "type", "role", "source", "category", "topic", "language"})


@dataclass
class ModelInitConfig:
    """Shape of the embedded base model and of its tokenizer."""

    stage: ClassVar[str] = "model"

    output_dir: str = field(default="runs/base", metadata={"help": "Where the model directory is written."})
    architecture: Literal["llama", "qwen2"] = field(
        default="qwen2", metadata={"help": "transformers architecture: llama (LlamaForCausalLM) or qwen2 (Qwen2ForCausalLM)."})
    vocab_size: int = field(default=4096, metadata={
        "help": "Target BPE vocabulary size incl. special tokens; a small corpus may yield fewer (the model uses what was learnt)."})
    min_frequency: int = field(default=2, metadata={"help": "A pair must occur this often in the corpus to become a merge."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the residual stream."})
    intermediate_size: int = field(default=344, metadata={"help": "Width of the MLP's hidden layer."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Number of decoder layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Query heads per layer (must divide hidden_size)."})
    num_key_value_heads: int = field(default=2, metadata={"help": "Key/value heads (grouped-query attention; must divide num_attention_heads)."})
    max_position_embeddings: int = field(default=1024, metadata={"help": "Longest sequence the model (and tokenizer) accept."})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base frequency."})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "Share the input embedding and the LM head (halves the embedding parameters)."})
    initializer_range: float = field(default=0.02, metadata={"help": "Std of the normal init of weights."})
    seed: int = field(default=0, metadata={"help": "torch seed for the random weights."})
    corpus: list[str] = field(default_factory=list, metadata={
        "help": "Text the tokenizer is trained on: .txt files or JSONL records (all text fields). Empty: the bundled samples."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing non-empty output_dir."})

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} is not a multiple of num_key_value_heads {self.num_key_value_heads}")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ConfigError("hidden_size / num_attention_heads must be even (RoPE rotates pairs of dimensions)")
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ConfigError(f"vocab_size {self.vocab_size} is below the 256 byte tokens + {len(SPECIAL_TOKENS)} special tokens")


def corpus_paths(cfg: ModelInitConfig) -> list[Path]:
    if cfg.corpus:
        paths = [Path(p) for p in cfg.corpus]
        for p in paths:
            if not p.is_file():
                raise CharopsError(f"corpus file '{p}' does not exist (corpus= takes .txt or .jsonl files)")
        return paths
    paths = [SAMPLES_DIR / name for name in DEFAULT_CORPUS if (SAMPLES_DIR / name).is_file()]
    if not paths:
        raise CharopsError(f"no bundled samples under {SAMPLES_DIR} to train the tokenizer on; "
                           "pass corpus=FILE[,FILE...] (.txt or .jsonl)")
    return paths


def _strings(value, key: str | None = None):
    if isinstance(value, str):
        if key not in _NON_TEXT_KEYS and value.strip():
            yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, key)


def read_corpus(paths: list[Path]) -> list[str]:
    """Texts in file order: a .txt file is one text per non-empty line; JSONL gives every text field."""
    texts: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if path.suffix == ".jsonl":
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise CharopsError(f"{path} line {lineno}: not valid JSON ({exc.msg}); fix or remove the line") from None
                    texts.extend(_strings(record))
                else:
                    texts.append(line.rstrip("\n"))
    if not texts:
        raise CharopsError(f"corpus {', '.join(map(str, paths))} holds no text to train the tokenizer on")
    return texts


# Qwen2's pre-tokenizer split: digits one by one, a run of CJK/letters with at most one leading
# symbol, newlines apart. transformers loads a ``qwen2`` model's tokenizer as Qwen2Tokenizer, which
# rebuilds this exact pipeline around the saved vocab and merges; training with the same pipeline
# makes that reload a no-op, so the tokenizer trained here is the one every stage uses.
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int = 2):
    """Byte-level BPE (GPT-2/Qwen2 style): any UTF-8 text encodes, no unknown tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def build_tokenizer(tok, model_max_length: int):
    from transformers import PreTrainedTokenizerFast

    # eos is <|im_end|> so plain generate()/pipelines stop at the end of the character's turn;
    # <|endoftext|> pads and separates pretraining documents (as in Qwen2-Instruct).
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        model_max_length=model_max_length,
        chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def build_model(cfg: ModelInitConfig, vocab_size: int, pad_id: int, eos_ids: list[int]):
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[cfg.architecture]
    mconf = config_cls(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_word_embeddings,
        initializer_range=cfg.initializer_range,
        bos_token_id=None,
        eos_token_id=eos_ids[0],
        pad_token_id=pad_id,
        dtype="float32",
    )
    torch.manual_seed(cfg.seed)
    model = model_cls(mconf)
    model.generation_config = GenerationConfig(eos_token_id=eos_ids, pad_token_id=pad_id, bos_token_id=None)
    return model


def run(cfg: ModelInitConfig) -> dict:
    """Train the tokenizer, build the model, write the directory atomically; return a summary."""
    out = check_output(cfg.output_dir, overwrite=cfg.overwrite, overwrite_hint="pass overwrite=true")
    paths = corpus_paths(cfg)
    texts = read_corpus(paths)
    tok = train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency)
    tokenizer = build_tokenizer(tok, cfg.max_position_embeddings)
    pad_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    vocab = len(tokenizer)
    model = build_model(cfg, vocab, pad_id, [im_end_id, pad_id])
    n_params = sum(p.numel() for p in model.parameters())

    from transformers.utils import logging as hf_logging

    from charops.model import tokenizer_sha256

    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        os.chmod(tmp, 0o755)  # a model dir is shared (serving pods, other users); mkdtemp made it 0700
        hf_logging.disable_progress_bar()  # one shard of a few MB: the bar is noise
        try:
            model.save_pretrained(tmp, safe_serialization=True)
        finally:
            hf_logging.enable_progress_bar()
        tokenizer.save_pretrained(tmp)
        summary = {
            "output_dir": str(out),
            "architecture": cfg.architecture,
            "parameters": n_params,
            "vocab_size": vocab,
            "corpus": [str(p) for p in paths],
            "corpus_texts": len(texts),
            "tokenizer_sha256": tokenizer_sha256(tmp),
        }
        # Not part of the Hugging Face layout: how this base model was made (kept out of
        # tokenizer_sha256 and read by nothing at training time).
        write_json(tmp / "charops_model_init.json", {"config": _config_dict(cfg), **{k: v for k, v in summary.items() if k != "output_dir"}})
    summary["sha256"] = sha256_tree(out)
    return summary


def _config_dict(cfg: ModelInitConfig) -> dict:
    from charops.config import to_dict

    d = to_dict(cfg)
    # Where it was written and whether it replaced something do not change the model.
    d.pop("output_dir")
    d.pop("overwrite")
    return d


def main(argv: list[str] | None = None) -> None:
    from charops.config import stage_main

    summary = stage_main(ModelInitConfig, run, argv, default="tiny", flags={"--output": "output_dir"})
    print(json.dumps(summary, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
