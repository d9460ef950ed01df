"""One tokenizer loader (one pad fallback) for data, training and evaluation; one IGNORE_INDEX.

    .venv/bin/python -m pytest tests/unit/test_tokenizer_loader.py -x -q
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "charops"


@pytest.fixture(scope="module")
def llama_micro(tmp_path_factory, micro_corpus) -> Path:
    from charops.config import load_config
    from charops.model.init import ModelInitConfig, run

    out = tmp_path_factory.mktemp("llama") / "micro"
    run(load_config(ModelInitConfig, "micro", [f"output_dir={out}", f"corpus={micro_corpus}", "architecture=llama"]))
    return out


@pytest.fixture
def no_pad_model(tmp_path, llama_micro) -> Path:
    """A Llama micro model whose tokenizer has no pad token (as many hub models ship; a Qwen2
    tokenizer would bring its own default)."""
    d = tmp_path / "no_pad"
    shutil.copytree(llama_micro, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("pad_token")
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(d).pad_token is None
    return d


def test_every_stage_gets_the_same_pad_fallback(no_pad_model):
    from charops.eval.heldout import _load
    from charops.model.load import load_tokenizer
    from charops.train import arguments

    tok = load_tokenizer(no_pad_model)
    vocab = tok.get_vocab()
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == vocab["<|endoftext|>"]
    assert arguments.load_tokenizer(no_pad_model).pad_token_id == tok.pad_token_id
    _, _, heldout_tok, _ = _load(str(no_pad_model))
    assert heldout_tok.pad_token_id == tok.pad_token_id


def test_pad_falls_back_to_eos_without_endoftext(tmp_path, no_pad_model):
    from charops.model.load import load_tokenizer

    tok = load_tokenizer(no_pad_model)
    assert tok.eos_token == "<|im_end|>"
    tokenizer_json = json.loads((no_pad_model / "tokenizer.json").read_text())
    for added in tokenizer_json["added_tokens"]:
        if added["content"] == "<|endoftext|>":
            added["content"] = "<|unused|>"
    tokenizer_json["model"]["vocab"] = {("<|unused|>" if k == "<|endoftext|>" else k): v
                                        for k, v in tokenizer_json["model"]["vocab"].items()}
    (no_pad_model / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    tok = load_tokenizer(no_pad_model)
    assert "<|endoftext|>" not in tok.get_vocab()
    assert tok.pad_token == "<|im_end|>"


def test_prepared_pad_id_is_the_one_training_uses(tmp_path, no_pad_model):
    from conftest import build_train_dataset

    from charops.train import arguments

    out = build_train_dataset(no_pad_model, tmp_path / "ds")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["pad_token_id"] == arguments.load_tokenizer(no_pad_model).pad_token_id


def _minus_100(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)
            and isinstance(n.operand, ast.Constant) and n.operand.value == 100]


def test_one_ignore_index():
    from charops.data.tokenize import IGNORE_INDEX
    from charops.eval import heldout

    assert IGNORE_INDEX == -100 and heldout.IGNORE_INDEX is IGNORE_INDEX
    found = {str(p.relative_to(SRC)): lines for area in ("data", "train", "eval")
             for p in sorted((SRC / area).rglob("*.py")) if (lines := _minus_100(p))}
    assert found == {"data/tokenize.py": [32]}, f"-100 written out instead of IGNORE_INDEX: {found}"
