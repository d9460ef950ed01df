"""The eval stage's model work on a CUDA GPU: generation (bf16, batched), held-out loss and the
reward-model scores run on the GPU and give the same record shapes as on the CPU.

    .venv/bin/python -m pytest tests/gpu/test_eval_gpu.py -x -q -m gpu
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_generation_and_loss_on_the_gpu(micro_model_dir, eval_dataset_dir):
    from charops.eval import heldout
    from charops.eval.generate import GenerationSettings, generate_replies, load_model, load_prompts
    from charops.io import read_jsonl

    loaded = load_model(str(micro_model_dir))
    _, model, tokenizer = loaded
    assert model.device.type == "cuda"
    prompts = load_prompts(eval_dataset_dir)
    replies, stats = generate_replies(loaded, "candidate", prompts, GenerationSettings(max_new_tokens=8, batch_size=4))
    assert len(replies) == len(prompts) and all(r["new_tokens"] <= 8 for r in replies)
    assert stats["new_tokens"] == sum(r["new_tokens"] for r in replies)
    rows = list(read_jsonl(eval_dataset_dir / "sft" / "validation.jsonl"))
    loss = heldout.aggregate(rows, heldout.response_nll(model, rows, 4, tokenizer.pad_token_id or 0))
    assert math.isfinite(loss["loss"]) and loss["tokens"] > 0
