"""model init: determinism, shape, reload, chat template, model references.

    .venv/bin/python -m pytest tests/unit/test_model_init.py -x -q
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from charops.config import load_config
from charops.errors import CharopsError
from charops.io import sha256_file, sha256_tree
from charops.model import tokenizer_sha256
from charops.model.chat_template import CHATML_TEMPLATE, IM_END, render_chatml_with_spans
from charops.model.init import ModelInitConfig, build_model, run
from charops.model.load import load_tokenizer, resolve_model

SCENE = [
    {"role": "system", "content": "你是小明，一个爱看书的学生。"},
    {"role": "user", "content": "你好呀", "name": "小红"},
    {"role": "assistant", "content": "（微笑）你好，小红！"},
    {"role": "user", "content": "What are you reading?", "name": "Tom"},
    {"role": "assistant", "content": "A history book (curious)."},
    {"role": "user", "content": "好看吗？"},
]


def _init(tmp_path, corpus, name="m", *overrides):
    out = tmp_path / name
    return out, run(load_config(ModelInitConfig, "micro", [f"output_dir={out}", f"corpus={corpus}", *overrides]))


def test_same_seed_and_corpus_give_identical_bytes(tmp_path, micro_corpus, micro_model_dir):
    out, summary = _init(tmp_path, micro_corpus)
    assert sha256_tree(out) == sha256_tree(micro_model_dir) == summary["sha256"]
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).is_file(), name


def test_other_seed_changes_weights_not_tokenizer(tmp_path, micro_corpus, micro_model_dir):
    out, _ = _init(tmp_path, micro_corpus, "s1", "seed=1")
    assert sha256_file(out / "model.safetensors") != sha256_file(micro_model_dir / "model.safetensors")
    assert tokenizer_sha256(out) == tokenizer_sha256(micro_model_dir)


def test_tokenizer_sha256_covers_the_chat_template(tmp_path, micro_model_dir):
    copy = tmp_path / "copy"
    shutil.copytree(micro_model_dir, copy)
    assert tokenizer_sha256(copy) == tokenizer_sha256(micro_model_dir)
    (copy / "chat_template.jinja").write_text(CHATML_TEMPLATE.replace("：", ":"), encoding="utf-8")
    assert tokenizer_sha256(copy) != tokenizer_sha256(micro_model_dir)


def _expected_qwen2_params(V, h, i, L, heads, kv_heads):
    head_dim = h // heads
    kv = kv_heads * head_dim
    attn = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v carry biases in Qwen2; o does not
    mlp = 3 * h * i                                   # gate, up, down
    return V * h + L * (attn + mlp + 2 * h) + h       # tied embedding, 2 RMSNorms/layer, final norm


def test_tiny_preset_parameter_count():
    cfg = load_config(ModelInitConfig, "tiny")
    model = build_model(cfg, cfg.vocab_size, pad_id=0, eos_ids=[2, 0])
    n = sum(p.numel() for p in model.parameters())
    assert n == _expected_qwen2_params(cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size,
                                       cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads)
    assert n < 5_000_000


def test_summary_parameter_count_matches_saved_model(micro_model_dir):
    from transformers import AutoModelForCausalLM

    info = json.loads((micro_model_dir / "charops_model_init.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    assert model.config.vocab_size == info["vocab_size"] == len(load_tokenizer(micro_model_dir))


def test_reload_and_generate(micro_model_dir):
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(micro_model_dir)
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert tok.eos_token == IM_END and tok.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id[0] == tok.convert_tokens_to_ids(IM_END)
    batch = tok.apply_chat_template(SCENE, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, batch["input_ids"].shape[1] + 4)
    assert tok.decode(out[0, batch["input_ids"].shape[1]:]) != ""


def test_llama_architecture(tmp_path, micro_corpus):
    from transformers import AutoModelForCausalLM

    out, summary = _init(tmp_path, micro_corpus, "llama", "architecture=llama")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())


def test_reloaded_tokenizer_encodes_like_the_trained_one(micro_model_dir):
    # transformers loads a qwen2 model's tokenizer as Qwen2Tokenizer, rebuilding its pipeline;
    # it must tokenize exactly as the file that was trained.
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(micro_model_dir / "tokenizer.json"))
    tok = load_tokenizer(micro_model_dir)
    text = render_chatml_with_spans(SCENE)[0] + "  numbers 12345,\n\n tabs\tand 全角！？ “quotes” é"
    assert tok(text, add_special_tokens=False)["input_ids"] == raw.encode(text).ids
    assert tok.decode(raw.encode(text).ids) == text


def test_chat_template_renders_chatml_with_names(micro_model_dir):
    tok = load_tokenizer(micro_model_dir)
    text = tok.apply_chat_template(SCENE, tokenize=False, add_generation_prompt=True)
    assert text == render_chatml_with_spans(SCENE, add_generation_prompt=True)[0]
    assert "<|im_start|>user\n小红：你好呀<|im_end|>\n" in text
    assert "<|im_start|>user\n好看吗？<|im_end|>\n<|im_start|>assistant\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.apply_chat_template(SCENE, tokenize=False) == render_chatml_with_spans(SCENE)[0]


def test_assistant_mask_is_content_plus_end_of_turn(micro_model_dir):
    tok = load_tokenizer(micro_model_dir)
    out = tok.apply_chat_template(SCENE[:5], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    runs, cur = [], []
    for t, m in zip(ids, mask, strict=True):
        if m:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    assert [tok.decode(r) for r in runs] == ["（微笑）你好，小红！<|im_end|>", "A history book (curious).<|im_end|>"]


def test_trl_accepts_template(micro_model_dir):
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    tok = load_tokenizer(micro_model_dir)
    assert has_generation_markers(tok.chat_template)
    assert get_training_chat_template(tok) is None  # None = already training-compatible


def test_existing_output_is_an_error(tmp_path, micro_corpus):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(CharopsError, match="exists and is not empty"):
        _init(tmp_path, micro_corpus)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dirs left behind
    _init(tmp_path, micro_corpus, "m", "overwrite=true")
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_missing_corpus_is_an_error(tmp_path):
    with pytest.raises(CharopsError, match="corpus file .*nope.txt' does not exist"):
        _init(tmp_path, tmp_path / "nope.txt")


def test_bad_shapes_rejected():
    with pytest.raises(CharopsError, match="not a multiple of num_attention_heads"):
        load_config(ModelInitConfig, "micro", ["hidden_size=30", "num_attention_heads=4"])


def test_resolve_local_dir(micro_model_dir):
    assert resolve_model(str(micro_model_dir)) == micro_model_dir


def test_resolve_missing_local_path(tmp_path):
    with pytest.raises(CharopsError, match=r"^base model '\./nope/model' does not exist"):
        resolve_model("./nope/model")
    with pytest.raises(CharopsError, match="does not exist"):
        resolve_model(str(tmp_path / "absent"))


def test_resolve_dir_without_config(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(CharopsError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_resolve_unreachable_hub_id(tmp_path):
    # Offline here (and an unknown repo where online): either way one clear line.
    with pytest.raises(CharopsError) as err:
        resolve_model("charops-tests/no-such-model-9f3a", cache_dir=tmp_path)
    msg = str(err.value)
    assert "'charops-tests/no-such-model-9f3a'" in msg and "s3://" in msg and "\n" not in msg


def test_cli_model_init(tmp_path, micro_corpus):
    from typer.testing import CliRunner

    from charops.cli.main import app

    out = tmp_path / "cli"
    args = ["model", "init", "--config", "micro", "--output", str(out), f"corpus={micro_corpus}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    n = json.loads((out / "charops_model_init.json").read_text())["parameters"]
    assert f"{n:,} parameters" in res.output and str(out) in res.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "error: output directory" in again.output and "Traceback" not in again.output


def test_resolve_s3_prefix(tmp_path, micro_model_dir, s3_server, s3_bucket, monkeypatch):
    from charops.storage import open_store

    monkeypatch.setenv("CHAROPS_S3_ENDPOINT", s3_server["url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    open_store(f"s3://{s3_bucket}").put_dir(micro_model_dir, "models/micro")
    local = resolve_model(f"s3://{s3_bucket}/models/micro", cache_dir=tmp_path / "cache")
    assert local.parent == tmp_path / "cache"
    assert tokenizer_sha256(local) == tokenizer_sha256(micro_model_dir)
    assert sha256_file(local / "model.safetensors") == sha256_file(micro_model_dir / "model.safetensors")
    assert resolve_model(f"s3://{s3_bucket}/models/micro", cache_dir=tmp_path / "cache") == local  # refetch in place
    with pytest.raises(CharopsError):
        resolve_model(f"s3://{s3_bucket}/models/absent", cache_dir=tmp_path / "cache")
