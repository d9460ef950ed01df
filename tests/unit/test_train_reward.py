"""charops train reward: TRL RewardTrainer on the preference pairs, held-out pair accuracy and the
calibration the eval stage's reward-model judge uses.

    .venv/bin/python -m pytest tests/unit/test_train_reward.py -x -q
"""

from __future__ import annotations

import json

import pytest

from charops.config import load_config
from charops.errors import ConfigError
from charops.train.reward import RewardConfig, calibrate, run, score_conversations


def test_calibrate_hand_worked():
    out = calibrate([3.0, 1.0, 2.0], [1.0, 2.0, 0.0])
    assert out["pair_accuracy"] == pytest.approx(2 / 3)
    assert out["calibration"]["chosen_mean"] == 2.0 and out["calibration"]["rejected_mean"] == 1.0
    # six rewards, mean 1.5, sample sd sqrt(5.5/5)
    assert out["reward_sd"] == pytest.approx((5.5 / 5) ** 0.5)
    assert out["tie_margin"] == pytest.approx(0.25 * (5.5 / 5) ** 0.5)


def test_lora_is_refused():
    with pytest.raises(ConfigError, match="lora"):
        load_config(RewardConfig, "tiny-cpu", ["lora.enabled=true"])


def test_reward_model_trains_and_reports_pair_accuracy(tmp_path, micro_model_dir, eval_dataset_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = load_config(RewardConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={eval_dataset_dir}",
                                                 f"output_dir={tmp_path / 'reward'}", "max_steps=3",
                                                 "per_device_train_batch_size=2", "max_seq_len=256"])
    summary = run(cfg)
    reward = summary["reward"]
    assert summary["stage"] == "reward" and summary["steps"] == 3
    assert reward["pairs"] >= 1
    model_dir = tmp_path / "reward" / "model"
    saved = json.loads((model_dir / "training_summary.json").read_text(encoding="utf-8"))
    assert saved["reward"] == reward
    # The saved directory is a sequence-classification model whose scores reproduce the recorded ones.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.num_labels == 1
    split = eval_dataset_dir / "dpo" / f"{reward['scored_on']}.jsonl"
    rows = [json.loads(line) for line in split.read_text(encoding="utf-8").splitlines() if line]
    chosen = score_conversations(model, tok, [r["prompt"] + r["chosen"] for r in rows])
    rejected = score_conversations(model, tok, [r["prompt"] + r["rejected"] for r in rows])
    # Every recorded number, by hand from the saved model's own scores of the held-out pairs.
    n = len(rows)
    assert reward["pairs"] == n
    assert reward["pair_accuracy"] == sum(c > r for c, r in zip(chosen, rejected, strict=True)) / n
    assert sum(chosen) / n == pytest.approx(reward["calibration"]["chosen_mean"], abs=1e-4)
    assert sum(rejected) / n == pytest.approx(reward["calibration"]["rejected_mean"], abs=1e-4)
    both = chosen + rejected
    mean = sum(both) / (2 * n)
    sd = (sum((x - mean) ** 2 for x in both) / (2 * n - 1)) ** 0.5
    assert reward["reward_sd"] == pytest.approx(sd, abs=1e-4)
    assert reward["tie_margin"] == pytest.approx(sd / 4, abs=1e-4)


def test_cli_train_reward_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from charops.cli.main import app

    result = CliRunner().invoke(app, ["train", "reward", f"model={tmp_path / 'missing'}"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "Traceback" not in result.output
