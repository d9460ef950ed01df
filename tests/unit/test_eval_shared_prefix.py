"""Generation with a shared prefix (the character profile every prompt of a character starts
with) computed once: the replies are the ones generating each batch in full gives.

    .venv/bin/python -m pytest tests/unit/test_eval_shared_prefix.py -x -q
"""

from __future__ import annotations

import torch

from charops.eval.generate import (
    GenerationSettings,
    generate_batch,
    generate_batch_shared,
    generate_replies,
    load_model,
    shared_prefix,
)


def test_shared_prefix_leaves_each_prompt_a_token_of_its_own():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 9, 9]]) == 3
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter keeps its last token
    assert shared_prefix([[5, 1], [6, 1]]) == 0


def _prompts(n: int) -> list[dict]:
    system = {"role": "system", "content": "You are Mara, a lighthouse keeper on a windy island. " * 6}
    lines = ["How was the storm?", "Tell me about the lamp.", "Do you get lonely?", "What do you eat?",
             "Who visits you?"]
    return [{"id": f"p{i}", "character": "Mara", "category": "daily-life", "topic": "chit-chat",
             "messages": [system, {"role": "user", "content": lines[i % len(lines)] + " " * (i // len(lines))}]}
            for i in range(n)]


def test_shared_and_full_generation_give_the_same_replies(micro_model_dir):
    loaded = load_model(str(micro_model_dir))
    settings = GenerationSettings(max_new_tokens=8, batch_size=4)
    shared, stats = generate_replies(loaded, "m", _prompts(5), settings, share_prefix=True)
    full, plain = generate_replies(loaded, "m", _prompts(5), settings, share_prefix=False)
    assert stats["shared_prefix_tokens_saved"] > 0 and plain["shared_prefix_tokens_saved"] == 0
    assert [r["reply"] for r in shared] == [r["reply"] for r in full]
    assert [r["new_tokens"] for r in shared] == [r["new_tokens"] for r in full]


def test_the_first_step_logits_match(micro_model_dir):
    """The numbers behind the equal replies: the shared path's first-step scores are the full
    path's (greedy, scores returned) to float precision."""
    from transformers import GenerationConfig

    _, model, tok = load_model(str(micro_model_dir))
    seqs = [tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=True,
                                    return_dict=True)["input_ids"] for p in _prompts(3)]
    common = shared_prefix(seqs)
    assert common > 16
    cfg = GenerationConfig(max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True,
                           pad_token_id=tok.pad_token_id)
    captured = {}
    real_generate = model.generate

    def spy(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        captured.setdefault("scores", []).append(out.scores[0])
        return out.sequences

    model.generate = spy
    generate_batch(model, seqs, tok.pad_token_id, cfg)
    generate_batch_shared(model, seqs, common, tok.pad_token_id, cfg)
    full, shared = captured["scores"]
    torch.testing.assert_close(shared, full, rtol=1e-4, atol=1e-4)


def test_batches_never_mix_two_characters():
    from charops.eval.generate import batches_by_group

    group = {0: "a", 1: "a", 2: "a", 3: "b", 4: "b", 5: "c"}.__getitem__
    assert batches_by_group([0, 1, 2, 3, 4, 5], group, 2) == [[0, 1], [2], [3, 4], [5]]
    assert batches_by_group([0, 1, 2, 3, 4, 5], group, 8) == [[0, 1, 2], [3, 4], [5]]
    assert batches_by_group([], group, 4) == []
