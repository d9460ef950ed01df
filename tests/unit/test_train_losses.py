"""Each training stage's loss, computed by hand in plain torch, against what the stage reports.

The stage runs one optimizer step over a batch holding the whole (tiny) train split; the loss it
logs for step 1 is computed before that step, from the base model's weights, so the reference
is the base model's logits on the same rows.

    .venv/bin/python -m pytest tests/unit/test_train_losses.py -x -q
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from charops.config import load_config
from charops.io import read_jsonl

torch.set_num_threads(1)


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _one_step(cls, run, tmp_path, **overrides):
    args = {"max_steps": 1, "per_device_train_batch_size": 64, "evaluate": False, "save_steps": 100,
            "output_dir": str(tmp_path / "run"), **overrides}
    summary = run(load_config(cls, "tiny-cpu", [f"{k}={v}" for k, v in args.items()]))
    on_disk = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert on_disk["loss_curve"] == summary["loss_curve"]
    return summary


def _token_nll(model, input_ids, position_ids=None):
    """-log p(x_t | x_<t) for t = 1..n-1 of one sequence."""
    ids = torch.tensor([input_ids])
    pos = torch.tensor([position_ids]) if position_ids is not None else None
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=pos).logits[0]
    return -F.log_softmax(logits[:-1].double(), -1).gather(-1, ids[0, 1:, None]).squeeze(-1)


def _segments(position_ids):
    """(start, end) of each document of a packed block: a new one wherever positions restart."""
    starts = [i for i, p in enumerate(position_ids) if i == 0 or p != position_ids[i - 1] + 1]
    return list(zip(starts, starts[1:] + [len(position_ids)], strict=True))


def test_pretrain_loss_is_clm_over_every_token_of_each_document(tmp_path, micro_model_dir, train_dataset_dir):
    from charops.train.pretrain import PretrainConfig, run

    summary = _one_step(PretrainConfig, run, tmp_path, model=micro_model_dir, dataset=train_dataset_dir)
    model = _model(micro_model_dir)
    total, n = 0.0, 0
    for block in read_jsonl(train_dataset_dir / "pretrain" / "train.jsonl"):
        # Each document alone, as if it had never been packed: no context from its neighbours.
        for a, b in _segments(block["position_ids"]):
            ids, labels = block["input_ids"][a:b], block["labels"][a:b]
            if b - a < 2:
                continue
            nll = _token_nll(model, ids, block["position_ids"][a:b])
            keep = torch.tensor(labels[1:]) != -100
            total += float(nll[keep].sum())
            n += int(keep.sum())
    expected = total / n
    torch.testing.assert_close(summary["loss_curve"][0]["loss"], expected, rtol=1e-5, atol=1e-6)
    assert summary["supervised_tokens"] == n
    assert summary["steps"] == 1


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("last_turn_only", [False, True])
def test_sft_loss_is_over_assistant_tokens_only(tmp_path, micro_model_dir, train_dataset_dir, packing, last_turn_only):
    from charops.train.sft import SFTConfig, assistant_masks, run

    summary = _one_step(SFTConfig, run, tmp_path, model=micro_model_dir, dataset=train_dataset_dir,
                        packing=str(packing).lower(), last_turn_only=str(last_turn_only).lower())
    model = _model(micro_model_dir)
    total, n = 0.0, 0
    for row in read_jsonl(train_dataset_dir / "sft" / "train.jsonl"):
        nll = _token_nll(model, row["input_ids"])
        keep = torch.tensor(assistant_masks(row["labels"], last_turn_only)[1:], dtype=torch.bool)
        total += float(nll[keep].sum())
        n += int(keep.sum())
    expected = total / n
    torch.testing.assert_close(summary["loss_curve"][0]["loss"], expected, rtol=1e-5, atol=1e-6)
    assert summary["supervised_tokens"] == n
    if not last_turn_only:
        rows = list(read_jsonl(train_dataset_dir / "sft" / "train.jsonl"))
        assert n == sum(sum(lab != -100 for lab in r["labels"]) for r in rows)


def test_last_turn_only_keeps_the_last_run_of_supervised_tokens():
    from charops.train.sft import assistant_masks

    labels = [-100, -100, 5, 6, -100, -100, 7, 8, 9, -100]
    assert assistant_masks(labels, False) == [0, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    assert assistant_masks(labels, True) == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0]
    assert assistant_masks([-100, 4, 4], True) == [0, 1, 1]


def _completion_logp(model, tok, prompt, reply):
    """Summed log-prob of the reply's tokens given the prompt (as TRL splits them)."""
    p = tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(prompt + reply, tokenize=True, return_dict=True)["input_ids"]
    assert full[:len(p)] == p
    nll = _token_nll(model, full)
    return -float(nll[len(p) - 1:].sum())


@pytest.mark.parametrize("precompute", [False, True])
def test_dpo_loss_and_rewards_match_the_formula(tmp_path, micro_model_dir, micro_ref_model_dir, train_dataset_dir,
                                               precompute):
    from transformers import AutoTokenizer

    from charops.train.dpo import DPOConfig, run

    beta = 0.5
    summary = _one_step(DPOConfig, run, tmp_path, model=micro_model_dir, ref_model=micro_ref_model_dir,
                        dataset=train_dataset_dir, beta=beta, precompute_ref_log_probs=str(precompute).lower())
    policy, ref = _model(micro_model_dir), _model(micro_ref_model_dir)
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    losses, chosen_r, rejected_r = [], [], []
    for row in read_jsonl(train_dataset_dir / "dpo" / "train.jsonl"):
        pc = _completion_logp(policy, tok, row["prompt"], row["chosen"])
        pr = _completion_logp(policy, tok, row["prompt"], row["rejected"])
        rc = _completion_logp(ref, tok, row["prompt"], row["chosen"])
        rr = _completion_logp(ref, tok, row["prompt"], row["rejected"])
        losses.append(-F.logsigmoid(torch.tensor(beta * ((pc - rc) - (pr - rr)), dtype=torch.float64)))
        chosen_r.append(beta * (pc - rc))
        rejected_r.append(beta * (pr - rr))
    step1 = summary["loss_curve"][0]
    # TRL's LM head is fused (log-probs computed in chunks): agreement to ~1e-3 relative.
    torch.testing.assert_close(step1["loss"], float(torch.stack(losses).mean()), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(step1["rewards/chosen"], sum(chosen_r) / len(chosen_r), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(step1["rewards/rejected"], sum(rejected_r) / len(rejected_r), rtol=1e-3, atol=1e-4)
    margins = [c - r for c, r in zip(chosen_r, rejected_r, strict=True)]
    torch.testing.assert_close(step1["rewards/margins"], sum(margins) / len(margins), rtol=1e-3, atol=1e-4)
    assert step1["rewards/accuracies"] == pytest.approx(sum(m > 0 for m in margins) / len(margins))
    # The policy and the reference differ, so this is not the trivial log(2) of a policy equal to its reference.
    assert abs(step1["loss"] - 0.6931) > 1e-3
    assert summary["rewards"]["final"]["margins"] == step1["rewards/margins"]
