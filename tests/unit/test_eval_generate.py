"""Eval-stage generation (context fitting, batched left-padded generation, recorded settings),
automatic reply signals on hand-worked examples, and the whole stage on the micro model.

    .venv/bin/python -m pytest tests/unit/test_eval_generate.py -x -q
"""

from __future__ import annotations

import json

import pytest
import torch

from charops.config import load_config
from charops.errors import ConfigError
from charops.eval import signals
from charops.eval.generate import GenerationSettings, fit_context, generate_replies, load_prompts


def test_fit_context_keeps_system_and_latest_turns():
    msgs = [{"role": "system", "content": "S" * 10}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": str(i) * 10} for i in range(5)]
    count = lambda m: sum(len(x["content"]) for x in m)  # noqa: E731 - 10 "tokens" a message
    kept, dropped = fit_context(msgs, count, budget=30)
    assert dropped == 3 and kept == [msgs[0], msgs[4], msgs[5]]
    kept, dropped = fit_context(msgs, count, budget=60)
    assert dropped == 0 and kept == msgs
    # Even system + last turn too long: nothing more is dropped (the caller cuts tokens).
    kept, dropped = fit_context(msgs, count, budget=5)
    assert kept == [msgs[0], msgs[5]] and dropped == 4


def test_signals_hand_worked():
    replies = [{"id": "1", "reply": "好好好好", "character": "A", "category": "celebrity", "topic": "love"},
               {"id": "2", "reply": "Hello world, hello!", "character": "A", "category": "celebrity", "topic": "love"},
               {"id": "3", "reply": "  ", "character": "A", "category": "other", "topic": "love"}]
    s = signals.reply_signals(replies, profiles={"A": "x"})
    # unigrams: 好 x4, hello, world, hello -> 3 distinct of 7; bigrams: 好好 x3, hello-world, world-hello
    assert s["distinct_1"] == pytest.approx(3 / 7)
    assert s["distinct_2"] == pytest.approx(3 / 5)
    # trigrams 好好好 twice (second repeats: 1/2); hello-world-hello once (0) -> mean 0.25
    assert s["repetition_rate"] == pytest.approx(0.25)
    assert s["mean_reply_chars"] == pytest.approx((4 + 19 + 0) / 3)
    assert s["empty_rate"] == pytest.approx(1 / 3)
    assert s["by_category"]["other"]["empty_rate"] == 1.0
    assert s["by_topic"]["love"]["n"] == 3


def test_profile_consistency_hand_worked():
    profiles = {"林秋雁": "退役乒乓球运动员，环太平洋公开赛女单冠军，爱养君子兰。",
                "Captain Reed": "An old sea captain who sails the northern fjords and tells storm stories."}
    replies = [
        {"reply": "（笑）乒乓球嘛，冠军都是练出来的。", "character": "林秋雁"},           # own profile: match
        {"reply": "The storm in the fjords was the worst I ever sailed.", "character": "Captain Reed"},
        {"reply": "As an AI language model, I cannot sail.", "character": "Captain Reed"},  # breaks role
        {"reply": "冠军？乒乓球？", "character": "Captain Reed"},                          # sounds like the other one
    ]
    s = signals.reply_signals(replies, profiles)
    assert s["role_break_rate"] == 0.25
    assert s["profile_match_rate"] == 0.75  # the AI disclaimer still mentions "sail"; the last does not match
    assert s["profile_consistency"] == 0.5
    assert signals.breaks_role("我是一个人工智能助手") and not signals.breaks_role("我是林秋雁")


def test_prompts_fall_back_to_validation_dialogues(eval_dataset_dir, tmp_path):
    import shutil

    prompts = load_prompts(eval_dataset_dir)
    assert sorted(p["id"] for p in prompts) == ["e0", "e1", "e2", "e3"]
    assert {p["category"] for p in prompts} == {"daily-life", "games-videos"}
    copy = tmp_path / "data"
    shutil.copytree(eval_dataset_dir, copy)
    (copy / "eval" / "prompts.jsonl").write_text("", encoding="utf-8")
    cut = load_prompts(copy)
    assert cut and all(p["messages"][-1]["role"] == "user" and p["reference"] for p in cut)


def test_generate_records_settings_and_drops_old_turns(micro_model_dir, eval_dataset_dir):
    prompts = load_prompts(eval_dataset_dir)
    long = dict(prompts[0], id="long", messages=[prompts[0]["messages"][0]] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "我们一起去公园散步吧，好不好？" * 3}
        for i in range(11)])
    settings = GenerationSettings(max_new_tokens=8, batch_size=2, max_context_tokens=160, seed=3)
    replies, stats = generate_replies(str(micro_model_dir), "candidate", prompts + [long], settings)
    assert [r["id"] for r in replies] == [p["id"] for p in prompts] + ["long"]
    for r in replies:
        assert r["model"] == "candidate" and r["settings"] == {
            "seed": 3, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "repetition_penalty": 1.0}
        assert r["new_tokens"] <= 8 and r["prompt_tokens"] + 8 <= 160
        assert r["messages"][0]["role"] == "system" and r["messages"][-1]["role"] == "user"
        assert r["stopped"] in ("end_of_turn", "max_new_tokens")
    last = replies[-1]
    assert last["dropped_turns"] > 0 and last["messages"][-1] == long["messages"][-1]
    assert len(last["messages"]) == len(long["messages"]) - last["dropped_turns"]
    assert stats["prompts_with_dropped_turns"] >= 1 and stats["replies"] == len(prompts) + 1


def test_eval_stage_without_judge(tmp_path, micro_model_dir, micro_ref_model_dir, eval_dataset_dir):
    from charops.eval.run import EvalConfig, run

    out = tmp_path / "eval"
    cfg = load_config(EvalConfig, "default", [f"model={micro_model_dir}", f"baseline_model={micro_ref_model_dir}",
                                              f"dataset={eval_dataset_dir}", f"output_dir={out}", "judge=none",
                                              "max_new_tokens=6", "progress=false", "bootstrap_resamples=100"])
    summary = run(cfg)
    assert summary["schema"] == "charops.eval_summary/v1"
    assert summary["judge"]["kind"] == "none" and summary["pointwise"] is None and summary["pairwise"] is None
    assert any("no judge configured" in s for s in summary["skipped"])
    auto = summary["automatic"]
    for role in ("candidate", "baseline"):
        for key in ("loss", "perplexity", "preference_accuracy", "distinct_1", "distinct_2", "mean_reply_chars",
                    "repetition_rate", "empty_rate", "profile_consistency"):
            assert key in auto[role], (role, key)
        assert auto[role]["by_category"] and auto[role]["by_topic"]
    replies = [json.loads(line) for line in (out / "replies.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["model"] for r in replies} == {"candidate", "baseline"}
    assert (out / "pointwise.jsonl").read_text() == "" and (out / "pairwise.jsonl").read_text() == ""
    on_disk = json.loads((out / "eval_summary.json").read_text(encoding="utf-8"))
    assert on_disk["automatic"]["candidate"]["loss"] == pytest.approx(auto["candidate"]["loss"])


def test_eval_stage_refuses_output_over_an_input(micro_model_dir, eval_dataset_dir):
    from charops.eval.run import EvalConfig, run

    cfg = load_config(EvalConfig, "default", [f"model={micro_model_dir}", "baseline_model=null",
                                              f"dataset={eval_dataset_dir}", f"output_dir={eval_dataset_dir}/eval"])
    with pytest.raises(ConfigError, match="overlaps dataset"):
        run(cfg)


def test_eval_stage_with_the_reward_model_judge(tmp_path, micro_model_dir, micro_ref_model_dir, eval_dataset_dir):
    from charops.eval.run import EvalConfig, run
    from charops.train.reward import RewardConfig
    from charops.train.reward import run as train_reward

    reward = train_reward(load_config(RewardConfig, "tiny-cpu", [
        f"model={micro_model_dir}", f"dataset={eval_dataset_dir}", f"output_dir={tmp_path / 'reward'}",
        "max_steps=2", "per_device_train_batch_size=2", "max_seq_len=256"]))["reward"]
    out = tmp_path / "eval"
    summary = run(load_config(EvalConfig, "default", [
        f"model={micro_model_dir}", f"baseline_model={micro_ref_model_dir}", f"dataset={eval_dataset_dir}",
        f"output_dir={out}", f"reward_model={tmp_path / 'reward' / 'model'}", "max_new_tokens=6",
        "progress=false", "bootstrap_resamples=200", "heldout=false"]))
    judge = summary["judge"]
    assert judge["kind"] == "reward_model" and judge["pair_accuracy"] == reward["pair_accuracy"]
    assert judge["calibration"] == reward["calibration"]
    pair = summary["pairwise"]["overall"]
    assert pair["n"] == 4 and pair["unjudged"] == 0
    assert pair["win"] + pair["tie"] + pair["lose"] == pytest.approx(100.0)
    assert pair["advantage"] == pytest.approx(pair["win"] - pair["lose"])
    assert set(summary["pairwise"]["by_category"]) == {"daily-life", "games-videos"}
    records = [json.loads(x) for x in (out / "pairwise.jsonl").read_text(encoding="utf-8").splitlines()]
    for r in records:  # verdicts follow the reward difference and the recorded margin
        diff = r["reward_a"] - r["reward_b"]
        expected = "tie" if abs(diff) <= judge["tie_margin"] else ("win" if diff > 0 else "lose")
        assert r["verdict"] == expected
    assert summary["pointwise"]["dimensions"] == ["Overall"]
    assert summary["pointwise"]["candidate"]["overall"]["Overall"]["n"] == 4
    assert any("heldout=false" in s for s in summary["skipped"])


def test_eval_stage_reward_judge_needs_a_trained_reward_model(tmp_path, micro_model_dir, eval_dataset_dir):
    from charops.eval.run import EvalConfig, run

    cfg = load_config(EvalConfig, "default", [f"model={micro_model_dir}", "baseline_model=null",
                                              f"dataset={eval_dataset_dir}", f"output_dir={tmp_path / 'e'}",
                                              f"reward_model={micro_model_dir}", "max_new_tokens=2", "progress=false",
                                              "heldout=false"])
    with pytest.raises(ConfigError, match="charops train reward"):
        run(cfg)
    # The replies were stored before judging failed: the judge can be re-run on them alone.
    assert (tmp_path / "e" / "replies.jsonl").is_file()


def test_left_padded_batches_generate_what_single_prompts_do(micro_model_dir, eval_dataset_dir):
    from transformers import GenerationConfig

    from charops.eval.generate import generate_batch, load_model

    _, model, tok = load_model(str(micro_model_dir))
    prompts = [tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"] for p in load_prompts(eval_dataset_dir)]
    assert len({len(p) for p in prompts}) > 1  # different lengths: the batch pads on the left
    cfg = GenerationConfig(max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
    batched = generate_batch(model, prompts, 0, cfg)
    assert batched == [generate_batch(model, [p], 0, cfg)[0] for p in prompts]
    # The same prompts right-padded (the mistake left padding avoids) generate something else.
    length = max(len(p) for p in prompts)
    ids = torch.tensor([p + [0] * (length - len(p)) for p in prompts])
    attn = torch.tensor([[1] * len(p) + [0] * (length - len(p)) for p in prompts])
    right = model.generate(input_ids=ids, attention_mask=attn, generation_config=cfg)[:, length:].tolist()
    assert right != batched
