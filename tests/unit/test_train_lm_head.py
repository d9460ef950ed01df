"""The CPU path of TRL's fused LM head (charops.train.lm_head) gives TRL's numbers: the same
per-token log-probabilities, entropy, top-1 flags, mean logits, log(sum p^2), loss and gradients,
computed on the labelled positions only; and the stage trainers install it.

    .venv/bin/python -m pytest tests/unit/test_train_lm_head.py -q
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl.trainer.utils import add_fused_lm_head

from charops.train.lm_head import compact_lm_heads

OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


class _Trainer:  # what compact_lm_heads reads of a TRL trainer
    def __init__(self, model, ref_model=None):
        self.model, self.ref_model = model, ref_model


def _batch(vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, :7] = -100  # a prompt, then the reply
    labels[1, :4] = -100
    labels[1, 9:] = -100  # right padding
    attn = torch.ones_like(ids)
    attn[1, 9:] = 0
    return ids, labels, attn


def _run(model, ids, labels, attn, num_items=None):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True, num_items_in_batch=num_items)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("num_items", [None, 11])
def test_compact_head_gives_trls_numbers(micro_model_dir, num_items):
    trl_model = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    add_fused_lm_head(trl_model, outputs=OUTPUTS)
    add_fused_lm_head(ours, outputs=OUTPUTS)
    assert compact_lm_heads(_Trainer(ours)) == 1
    ids, labels, attn = _batch(ours.config.vocab_size)
    want, want_grads = _run(trl_model, ids, labels, attn, num_items)
    got, got_grads = _run(ours, ids, labels, attn, num_items)
    assert torch.equal(got.label_mask, want.label_mask)
    for name in OUTPUTS:
        a, b = getattr(got, name), getattr(want, name)
        assert a.shape == b.shape == labels[:, 1:].shape, name
        if name == "is_top1":
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    assert (got.log_probs[~got.label_mask] == 0).all()
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-6, atol=1e-6)
    assert want_grads.keys() == got_grads.keys() and want_grads
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_plain_forward_and_other_devices_keep_trls_path(micro_model_dir):
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    assert compact_lm_heads(_Trainer(model)) == 0  # no fused head: nothing to re-patch
    add_fused_lm_head(model)
    assert compact_lm_heads(_Trainer(model, ref_model=None)) == 1
    ids, labels, attn = _batch(model.config.vocab_size)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=attn).logits  # generation's forward is untouched
        reference = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)(
            input_ids=ids, attention_mask=attn).logits
    torch.testing.assert_close(plain, reference)
    soft = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    soft.config.final_logit_softcapping = 30.0  # a head TRL's kernel transforms: left to TRL
    add_fused_lm_head(soft)
    assert compact_lm_heads(_Trainer(soft)) == 0


def test_sft_trainer_installs_it(tmp_path, micro_model_dir, train_dataset_dir):
    from charops.config import load_config
    from charops.train import sft

    seen = []
    original = sft.CharopsSFTTrainer.train

    def train(self, *a, **k):
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        seen.append(base.forward.__func__.__code__.co_name)
        return original(self, *a, **k)

    sft.CharopsSFTTrainer.train = train
    try:
        sft.run(load_config(sft.SFTConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={train_dataset_dir}",
                                                       f"output_dir={tmp_path / 'sft'}", "max_steps=1",
                                                       "progress=false"]))
    finally:
        sft.CharopsSFTTrainer.train = original
    assert seen == ["forward"]  # charops.train.lm_head's forward, not TRL's _fused_forward
