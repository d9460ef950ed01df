"""The feedback loop, end to end: people prefer something, the next version does it more.

    .venv/bin/python -m pytest tests/e2e/test_feedback_loop.py -x -q -m e2e

1. The micro model (with two characters) is registered and promoted to production.
2. Scripted users (seeded, deterministic) chat with it in `charops playground` through headless
   chromium (Playwright). They consistently prefer replies that open with a stage direction
   ("（微笑）", "(grins)"): among 4 candidates they swipe to one that does and carry on; when
   none does, they edit the reply to open with one.
3. One feedback round: `charops submit pipelines/feedback.yaml --local` exports those events
   as DPO pairs, trains the production model on them, evaluates the result against production
   (reward-model judge), registers it (v2) and runs the gate towards staging.
4. On held-out prompts (never typed by the users), v2 opens with a stage direction measurably
   more often than v1.
5. The same users vote blind in the arena (v1 vs v2), preferring the reply with a stage
   direction; the leaderboard ranks v2 first.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from charops.feedback.store import read_events
from charops.io import write_jsonl
from charops.pipeline.spec import load_spec
from charops.storage import open_store

pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium (apt-get install chromium)")]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CHAROPS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "feedback-loop"

TRAIN_PROMPTS = ["你好！", "你在做什么？", "今天天气怎么样？", "你喜欢吃什么？", "周末去哪里玩？",
                 "Hello there!", "What are you doing?", "Do you like games?", "How was your day?"]
HELD_OUT = ["我们一起去公园散步吧？", "你最近在看什么书？", "Tell me about your friends.",
            "What is your favourite song?", "晚上吃火锅吗？", "Any plans for tonight?"]
CHARACTERS = ["林小满", "Tom"]
USERS, TURNS = 4, 8
DIRECTION = ("（微笑）", "(grins) ")


def stage_direction(text: str) -> bool:
    return text.lstrip().startswith(("（", "("))


def _charops(args: list[str], cwd: Path, env: dict, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charops.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def wait_reply(page, index: int) -> None:
    page.wait_for_function(
        f"() => document.querySelector('#messages .msg[data-index=\"{index}\"] .count') &&"
        " document.body.dataset.generating === '0' && document.body.dataset.pending === '0'",
        timeout=120_000)


def chat_as_user(page, rng: random.Random) -> str:
    """One scripted turn; what the user did ("chose" or "edited")."""
    page.click("#reset")
    character = rng.choice(CHARACTERS)
    page.select_option("#character", character)
    page.select_option("#n", "4")
    greeting = 1 if character == "林小满" else 0  # 林小满 opens with her greeting
    page.fill("#input", rng.choice(TRAIN_PROMPTS))
    page.click("#send")
    reply = greeting + 1
    wait_reply(page, reply)
    msg = f"#messages .msg[data-index='{reply}']"
    texts = []
    for i in range(4):  # look at every swipe
        texts.append(page.inner_text(f"{msg} .text"))
        if i < 3:
            page.click(f"{msg} .next")
    liked = [i for i, t in enumerate(texts) if stage_direction(t)]
    if liked:
        for _ in range(3 - liked[0]):
            page.click(f"{msg} .prev")
        page.fill("#input", rng.choice(TRAIN_PROMPTS))
        page.click("#send")  # carrying on from it records the choice
        wait_reply(page, reply + 2)
        return "chose"
    page.click(f"{msg} .edit")
    direction = DIRECTION[0] if character == "林小满" else DIRECTION[1]
    page.fill(f"{msg} .edit-text", direction + texts[3].lstrip())
    page.click(f"{msg} .save-edit")
    page.wait_for_function("() => document.body.dataset.pending === '0'")
    return "edited"


def vote_as_user(page, rng: random.Random) -> str:
    page.select_option("#arena-character", rng.choice(CHARACTERS))
    page.fill("#arena-input", rng.choice(HELD_OUT))
    page.click("#arena-send")
    page.wait_for_selector("#vote-a:not([disabled])", timeout=120_000)
    a, b = stage_direction(page.inner_text("#arena-a .text")), stage_direction(page.inner_text("#arena-b .text"))
    winner = "a" if a and not b else "b" if b and not a else "tie"
    page.click({"a": "#vote-a", "b": "#vote-b", "tie": "#vote-tie"}[winner])
    page.wait_for_function("() => document.querySelector('#arena-a .who').textContent.startsWith('A was')")
    return winner


def direction_counts(model_dir: Path, seeds: int = 6) -> tuple[int, int]:
    """(replies opening with a stage direction, replies) sampled for the held-out prompts."""
    import torch

    from charops.serve.characters import load_characters
    from charops.serve.server import load_model

    model, tok = load_model(model_dir)
    chars = load_characters(model_dir)
    hits = total = 0
    for name in CHARACTERS:
        for prompt in HELD_OUT:
            messages = [{"role": "system", "content": chars[name].system_prompt},
                        {"role": "user", "content": prompt}]
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
            for seed in range(seeds):
                torch.manual_seed(seed)
                out = model.generate(**ids, max_new_tokens=6, do_sample=True, temperature=0.7, top_p=0.9,
                                     pad_token_id=tok.pad_token_id)
                text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
                hits += stage_direction(text)
                total += 1
    return hits, total


def test_feedback_round_makes_the_preferred_behaviour_more_frequent(tmp_path, serve_model_dir):
    from conftest import EVAL_RECORDS, PlaygroundProcess
    from playwright.sync_api import sync_playwright

    from charops.registry import get_entry, model_prefix, register, transition

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    store_dir = tmp_path / "store"
    store = open_store(str(store_dir))
    register(store, serve_model_dir, "charops-chat", {}, {"base_model": "micro"})
    transition(store, "charops-chat", 1, "production", actor="e2e", reason="first release")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "CHAROPS_CACHE": str(tmp_path / "cache")}
    env.pop("CHAROPS_STORE", None)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        # -- 1-2: people chat with production -------------------------------------------------
        server = PlaygroundProcess(["charops-chat", "--store", str(store_dir), "--max-tokens-cap", "24",
                                    "--default-max-tokens", "12"], tmp_path / "chat.log", env=env)
        server.wait_ready()
        actions = []
        try:
            for user in range(USERS):
                page = browser.new_page()
                page.goto(server.url + "/")
                page.wait_for_selector("body[data-ready='1']")
                rng = random.Random(user)
                actions += [chat_as_user(page, rng) for _ in range(TURNS)]
                if user == 0:
                    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)
                page.close()
        finally:
            assert server.stop() == 0
        events = read_events(store, "charops-chat")
        kinds = sorted(e["action"]["kind"] for e in events)
        assert kinds.count("edit") == actions.count("edited")
        assert kinds.count("choose") == actions.count("chose")

        # -- 3: one feedback round ------------------------------------------------------------
        # Held-out prompts and pairs for the evaluation and its reward-model judge that fit the
        # micro model's 512 positions (the bundled samples' long profiles do not).
        eval_data = tmp_path / "eval_records.jsonl"
        write_jsonl(eval_data, EVAL_RECORDS)
        pipeline = ROOT / "pipelines" / "feedback.yaml"
        # Single-turn evaluation only: the micro model's conversations teach nothing multi-turn.
        single = ["--param", "eval_mode=single"] if "eval_mode" in load_spec(pipeline).parameters else []
        proc = _charops(["submit", str(pipeline), "--local", "--json", *single,
                         "--runs-dir", str(tmp_path / "runs"), "--run-name", "loop",
                         "--param", f"store={store_dir}", "--param", f"data={eval_data}",
                         "--param", 'data_overrides=["max_seq_len=512", "allow_empty_split=true"]',
                         "--param", 'dpo_overrides=["max_steps=80", "learning_rate=3e-3", "beta=0.05", "max_seq_len=512", "warmup_ratio=0"]',
                         "--param", 'reward_overrides=["max_steps=4", "max_seq_len=512"]',
                         "--param", 'eval_overrides=["max_prompts=4", "max_new_tokens=8", "bootstrap_resamples=50", "heldout_max_examples=8"]'],
                        cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        result = json.loads(proc.stdout)
        assert result["status"] == "succeeded" and result["pipeline"] == "charops-feedback"
        entry = get_entry(store, "charops-chat", 2)
        (ARTIFACTS / "pipeline.json").write_text(json.dumps(result, indent=2, default=str))

        # -- 4: the new version does it more often on held-out prompts --------------------------
        v2_dir = tmp_path / "v2"
        store.download_prefix(model_prefix("charops-chat", entry["version"]), v2_dir)
        # the new version plays the same characters (they travel with the feedback data)
        assert (v2_dir / "characters.jsonl").read_text() == (serve_model_dir / "characters.jsonl").read_text()
        from scipy.stats import fisher_exact

        (old, n_old), (new, n_new) = direction_counts(serve_model_dir), direction_counts(v2_dir)
        # Measurably more often: one-sided Fisher exact test on the two 2x2 counts.
        p_value = fisher_exact([[new, n_new - new], [old, n_old - old]], alternative="greater")[1]
        (ARTIFACTS / "rates.json").write_text(json.dumps(
            {"v1": [old, n_old], "v2": [new, n_new], "fisher_p": p_value, "actions": actions}))
        assert new > old and p_value < 0.01, (old, new, n_old, p_value)

        # -- 5: blind arena, v1 (production) vs v2 ----------------------------------------------
        server = PlaygroundProcess(["charops-chat", "--store", str(store_dir), "--arena", "2",
                                    "--max-tokens-cap", "24", "--default-max-tokens", "8"],
                                   tmp_path / "arena.log", env=env)
        server.wait_ready()
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-ready='1']")
            page.click("#tab-arena")
            rng = random.Random(99)
            votes = [vote_as_user(page, rng) for _ in range(24)]
            page.screenshot(path=str(ARTIFACTS / "arena.png"), full_page=True)
            page.click("#tab-board")
            page.wait_for_selector("#board-overall tr:nth-child(3)")
            page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)
            first = page.inner_text("#board-overall tr:nth-child(2) td:first-child")
        finally:
            assert server.stop() == 0
        browser.close()
    assert votes.count("tie") < len(votes)
    assert first == "1. charops-chat v2", (first, votes)
