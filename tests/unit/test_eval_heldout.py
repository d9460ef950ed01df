"""Held-out evaluation, checked against losses computed by hand in plain torch."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from charops.config import load_config
from charops.errors import DataError
from charops.eval.heldout import HeldoutEvalConfig, run
from charops.io import read_jsonl


def _row_nll(model, row):
    """-sum log p(label_t | x_<t) over supervised positions, one example alone (no padding)."""
    ids = torch.tensor([row["input_ids"]])
    labels = torch.tensor(row["labels"])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    total, count = 0.0, 0
    for t in range(1, len(row["input_ids"])):
        if labels[t] != -100:
            total -= torch.log_softmax(logits[t - 1], -1)[labels[t]].item()
            count += 1
    return total, count


def _reply_logp(model, tok, prompt, reply):
    """Mean log-prob of the reply tokens: full = prefix (with generation prompt) + reply tokens."""
    prefix = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(prompt + reply, tokenize=True, return_dict=True)["input_ids"]
    assert full[: len(prefix)] == prefix
    ids = torch.tensor([full])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    # The reply ends at its end-of-turn token; the template's trailing newline is not supervised.
    end = len(full)
    while end > len(prefix) and tok.convert_ids_to_tokens(full[end - 1]) != "<|im_end|>":
        end -= 1
    lps = [torch.log_softmax(logits[t - 1], -1)[full[t]].item() for t in range(len(prefix), end)]
    return sum(lps) / len(lps)


@pytest.fixture(scope="module")
def eval_dataset_dir(micro_model_dir, tmp_path_factory):
    """train_records() prepared with a large validation share, so every split is non-empty."""
    from conftest import train_records

    from charops.data.prepare import PrepareConfig
    from charops.data.prepare import run as prepare
    from charops.io import write_jsonl

    base = tmp_path_factory.mktemp("eval_data")
    write_jsonl(base / "records.jsonl", train_records())
    prepare(load_config(PrepareConfig, None, [f"inputs={base / 'records.jsonl'}", f"model={micro_model_dir}",
                                              f"output_dir={base / 'ds'}", "validation_fraction=0.6",
                                              "progress=false"]))
    return base / "ds"


@pytest.fixture(scope="module")
def evaluated(micro_model_dir, eval_dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    cfg = load_config(HeldoutEvalConfig, "heldout", [f"model={micro_model_dir}", f"dataset={eval_dataset_dir}",
                                                     f"output_dir={out}", "batch_size=3", "num_samples=2",
                                                     "max_new_tokens=5", f"baseline_model={micro_model_dir}"])
    return run(cfg), out


def test_loss_matches_hand_computed(evaluated, micro_model_dir, eval_dataset_dir):
    metrics, _ = evaluated
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    rows = list(read_jsonl(eval_dataset_dir / "sft" / "validation.jsonl"))
    assert rows, "fixture dataset must have validation dialogues"
    per_row = [_row_nll(model, r) for r in rows]
    total, count = sum(p[0] for p in per_row), sum(p[1] for p in per_row)
    torch.testing.assert_close(metrics["model"]["loss"], total / count, rtol=1e-5, atol=1e-6)
    assert metrics["model"]["tokens"] == count
    assert math.isclose(metrics["model"]["perplexity"], math.exp(total / count), rel_tol=1e-6)
    # Token-weighted per-topic losses recombine into the overall loss.
    by_topic = metrics["model"]["by_topic"].values()
    recombined = sum(b["loss"] * b["tokens"] for b in by_topic) / sum(b["tokens"] for b in by_topic)
    torch.testing.assert_close(recombined, metrics["model"]["loss"], rtol=1e-6, atol=1e-7)
    # Same model as baseline: no change.
    assert metrics["loss_delta"] == pytest.approx(0.0, abs=1e-7)


def test_preference_accuracy_matches_hand_computed(evaluated, micro_model_dir, eval_dataset_dir):
    metrics, _ = evaluated
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    pairs = list(read_jsonl(eval_dataset_dir / "dpo" / "validation.jsonl"))
    assert pairs, "fixture dataset must have validation pairs"
    margins = [_reply_logp(model, tok, p["prompt"], p["chosen"]) - _reply_logp(model, tok, p["prompt"], p["rejected"])
               for p in pairs]
    pref = metrics["model"]["preference"]
    assert pref["pairs"] == len(pairs)
    assert pref["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / len(pairs))
    torch.testing.assert_close(pref["mean_logp_margin"], sum(margins) / len(margins), rtol=1e-4, atol=1e-5)


def test_outputs_written(evaluated):
    metrics, out = evaluated
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["model"]["loss"] == pytest.approx(metrics["model"]["loss"])
    samples = list(read_jsonl(out / "samples.jsonl"))
    assert len(samples) == 2 and all("reply" in s for s in samples)
    report = (out / "report.md").read_text()
    assert "| all |" in report and "preference accuracy" in report


def test_batching_does_not_change_the_loss(micro_model_dir, eval_dataset_dir, tmp_path):
    losses = []
    for bs in (1, 4):
        cfg = load_config(HeldoutEvalConfig, "heldout", [f"model={micro_model_dir}", f"dataset={eval_dataset_dir}",
                                                         f"output_dir={tmp_path / str(bs)}", f"batch_size={bs}",
                                                         "num_samples=0", "baseline_model=null"])
        losses.append(run(cfg)["model"]["loss"])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_tokenizer_mismatch_is_an_error(micro_model_dir, eval_dataset_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(micro_model_dir, other)
    (other / "chat_template.jinja").write_text((other / "chat_template.jinja").read_text() + "\n")
    cfg = load_config(HeldoutEvalConfig, "heldout", [f"model={other}", f"dataset={eval_dataset_dir}",
                                                     f"output_dir={tmp_path / 'e'}"])
    with pytest.raises(DataError, match="prepare the dataset with this model's tokenizer"):
        run(cfg)


def test_missing_dataset_is_an_error(micro_model_dir, tmp_path):
    cfg = load_config(HeldoutEvalConfig, "heldout", [f"model={micro_model_dir}", f"dataset={tmp_path}",
                                                     f"output_dir={tmp_path / 'e'}"])
    with pytest.raises(DataError, match="no manifest.json"):
        run(cfg)
