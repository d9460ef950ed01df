"""The reward model trained on its top layers only (``train_layers``): the judge the SmolLM2 CPU
recipe affords. Frozen weights stay bit for bit what the starting model had; the top layers and
the score head move.

    .venv/bin/python -m pytest tests/unit/test_reward_top_layers.py -x -q
"""

from __future__ import annotations

import pytest
import torch

from charops.config import load_config
from charops.errors import ConfigError
from charops.train.reward import RewardConfig, freeze_below, run


def test_freeze_below_leaves_only_the_top_layers_the_norm_and_the_head(micro_model_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(micro_model_dir, num_labels=1)
    n_layers = len(model.base_model.layers)
    trainable = freeze_below(model, 1)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith((f"model.layers.{n_layers - 1}.", "model.norm.", "score.")) for n in names)
    assert any(n.startswith("score.") for n in names) and any(n.startswith("model.norm.") for n in names)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in names)
    with pytest.raises(ConfigError, match="train_layers"):
        freeze_below(model, n_layers + 1)


def test_training_the_top_layer_changes_nothing_below_it(tmp_path, micro_model_dir, eval_dataset_dir):
    from safetensors.torch import load_file

    cfg = load_config(RewardConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={eval_dataset_dir}",
                                                 f"output_dir={tmp_path / 'reward'}", "max_steps=2",
                                                 "per_device_train_batch_size=2", "max_seq_len=256",
                                                 "train_layers=1", "learning_rate=1e-2"])
    summary = run(cfg)
    assert summary["steps"] == 2 and 0.0 <= summary["reward"]["pair_accuracy"] <= 1.0
    before = load_file(str(micro_model_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "reward" / "model" / "model.safetensors"))
    top = max(int(k.split(".")[2]) for k in before if k.startswith("model.layers."))
    below = [k for k in before if k.startswith("model.layers.") and int(k.split(".")[2]) < top]
    assert below and all(torch.equal(before[k], after[k]) for k in below)
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    moved = [k for k in before if k.startswith(f"model.layers.{top}.") and not torch.equal(before[k], after[k])]
    assert moved  # the top layer did train


def test_scoring_with_shared_prefixes_gives_the_full_scores(micro_model_dir):
    """Conversations that start alike (two replies to one context, one profile) are scored on a
    shared cache: the same rewards as scoring each in full, in the input order."""
    from transformers import AutoModelForSequenceClassification

    from charops.model.load import load_tokenizer
    from charops.train.reward import score_conversations

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(micro_model_dir, num_labels=1)
    tok = load_tokenizer(micro_model_dir)
    system = {"role": "system", "content": "You are Mara, a lighthouse keeper on a windy island. " * 4}
    convs = [[system, {"role": "user", "content": f"question {q}"},
              {"role": "assistant", "content": reply}]
             for q in range(3) for reply in ("(smiles) The lamp never sleeps.", "As an AI, I cannot.")]
    convs.append([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}])
    full = score_conversations(model, tok, convs, batch_size=8, share_prefix=False)
    shared = score_conversations(model, tok, convs, batch_size=8, share_prefix=True)
    torch.testing.assert_close(torch.tensor(shared), torch.tensor(full), rtol=1e-4, atol=1e-5)
    assert len(set(full)) > 1  # the rewards differ, so a mix-up of the order would show
    # In batches of two, each batch of one context's two replies shares it.
    torch.testing.assert_close(torch.tensor(score_conversations(model, tok, convs, batch_size=2)),
                               torch.tensor(full), rtol=1e-4, atol=1e-5)
