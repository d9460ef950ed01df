"""`charops model inspect DIR`: architecture, parameters, tokenizer, template markers, characters.

    .venv/bin/python -m pytest tests/unit/test_model_inspect.py -x -q
"""

from __future__ import annotations

import json
import shutil

import pytest

from charops.errors import CharopsError
from charops.model.inspection import describe, inspect_model


def test_inspect_reads_sizes_without_loading_and_checks_the_template(micro_model_dir):
    from transformers import AutoModelForCausalLM

    from charops.model import tokenizer_sha256
    from charops.model.load import load_tokenizer

    info = inspect_model(micro_model_dir)
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    assert info["parameters"] == sum(p.numel() for p in model.parameters()) and info["dtypes"] == {"F32": info["parameters"]}
    assert (info["architecture"], info["model_type"]) == ("Qwen2ForCausalLM", "qwen2")
    assert (info["hidden_size"], info["layers"], info["max_position_embeddings"]) == \
        (model.config.hidden_size, model.config.num_hidden_layers, model.config.max_position_embeddings)
    tok = load_tokenizer(micro_model_dir)
    assert info["tokenizer"]["vocab_size"] == len(tok)
    assert info["tokenizer"]["tokenizer_sha256"] == tokenizer_sha256(micro_model_dir)
    assert info["tokenizer"]["generation_markers"] is True
    # Both replies and their end-of-turn token, nothing else.
    assert info["tokenizer"]["assistant_text"] == "Hello.<|im_end|>Goodbye.<|im_end|>"
    assert info["tokenizer"]["assistant_tokens_marked"] == len(tok("Hello.<|im_end|>Goodbye.<|im_end|>")["input_ids"])
    assert info["characters"] == [] and info["training"] is None
    lines = describe(info)
    assert lines[0] == f"{micro_model_dir}: Qwen2ForCausalLM (qwen2), {info['parameters']:,} parameters (F32 {info['parameters']:,})"
    assert "  characters: none" in lines


def test_inspect_lists_characters_and_training_and_flags_a_template_without_markers(tmp_path, micro_model_dir):
    model = tmp_path / "m"
    shutil.copytree(micro_model_dir, model)
    (model / "characters.jsonl").write_text('{"name": "林秋雁"}\n{"name": "Theo"}\n', encoding="utf-8")
    (model / "training_summary.json").write_text(json.dumps(
        {"stage": "sft", "steps": 7, "final_loss": 2.5, "base_model": {"ref": "runs/base"}, "dataset": {}}))
    template = (model / "chat_template.jinja").read_text()
    (model / "chat_template.jinja").write_text(template.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", ""))
    info = inspect_model(model)
    assert info["characters"] == ["林秋雁", "Theo"]
    assert info["training"] == {"stage": "sft", "steps": 7, "final_loss": 2.5, "base_model": "runs/base",
                                "dataset_content_sha256": None}
    assert info["tokenizer"]["generation_markers"] is False and info["tokenizer"]["assistant_tokens_marked"] == 0
    lines = describe(info)
    assert "  characters (2): 林秋雁, Theo" in lines
    assert "  trained: sft, 7 steps, final loss 2.5000, from runs/base" in lines
    assert any("no {% generation %} markers" in line for line in lines)


def test_inspect_refuses_what_is_not_a_model(tmp_path, micro_model_dir):
    with pytest.raises(CharopsError, match="not a model directory"):
        inspect_model(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(micro_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x04\x00\x00\x00\x00\x00\x00\x00nope")
    with pytest.raises(CharopsError, match="not a safetensors file"):
        inspect_model(broken)
    (broken / "model.safetensors").write_bytes(b"\x01")
    with pytest.raises(CharopsError, match="not a safetensors file"):
        inspect_model(broken)


def test_cli_inspect_prints_the_summary_or_json(tmp_path, micro_model_dir):
    from typer.testing import CliRunner

    from charops.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["model", "inspect", str(micro_model_dir)])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == describe(inspect_model(micro_model_dir))
    res = runner.invoke(app, ["model", "inspect", str(micro_model_dir), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == json.loads(json.dumps(inspect_model(micro_model_dir)))
    res = runner.invoke(app, ["model", "inspect", str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "not a model directory" in res.stderr
    assert "Traceback" not in res.output
