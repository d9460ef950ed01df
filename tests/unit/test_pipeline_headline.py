"""The last screen of ``charops submit --local``: the run's headline (time, loss against the
base model, win/tie/lose and Advantage with p and the judge's accuracy, the gate's verdict and
stage, three sample replies, the next two commands), paths only in run.json and --verbose.

The run results here are written by hand in the layout kfp.local leaves (task folders, an
eval results directory with eval_summary.json and replies.jsonl): the tiny e2e pipeline
(tests/e2e/) runs the real thing; this pins what each line says for each kind of run.

    .venv/bin/python -m pytest tests/unit/test_pipeline_headline.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charops.io import write_json, write_jsonl
from charops.pipeline.local import LocalRunResult, final_model, run_headline, sample_replies

CHARS = ["Theo Marlowe", "Edie Calloway", "Wren Ashcombe", "Juniper"]


def _results(root: Path, candidate: str, baseline: str, accuracy: float = 0.9) -> Path:
    out = root / "evaluate" / "results"
    out.mkdir(parents=True)
    write_json(out / "eval_summary.json", {
        "schema": "charops.eval_summary/v1",
        "candidate": {"label": "candidate", "model": candidate},
        "baseline": {"label": "baseline", "model": baseline},
        "judge": {"kind": "reward_model", "pair_accuracy": accuracy, "pairs": 10},
        "pairwise": {"overall": {"win": 62.5, "tie": 8.3, "lose": 29.2, "advantage": 33.3, "n": 48,
                                 "sign_test_p": 0.0123, "advantage_ci95": [12.5, 52.1]}}})
    rows = []
    for i in range(8):
        for model in ("candidate", "baseline"):
            rows.append({"id": f"evp-{i:04d}", "model": model, "character": CHARS[i % 2],
                         "messages": [{"role": "system", "content": "profile"},
                                      {"role": "user", "content": f"question {i}"}],
                         "reply": f"({model}) answer {i}"})
    write_jsonl(out / "replies.jsonl", rows)
    return out


def _run(tmp_path: Path, *, eval_task="evaluate-2", register_task="register-2", gate=None,
         promoted=False, accuracy=0.9, order=("base-model", "dpo", "reward")) -> LocalRunResult:
    base, dpo, rm = (str(tmp_path / t / "model") for t in ("base-model", "dpo", "reward"))
    results = _results(tmp_path, dpo, base, accuracy)
    outputs = {"base-model": {"model": base}, "dpo": {"trained_model": dpo},
               "reward": {"trained_model": rm}, eval_task: {"results": str(results)},
               register_task: {"entry": str(tmp_path / "entry.json")}}
    metadata = {eval_task: {"metrics": {"loss": 3.0912, "baseline_loss": 3.5401, "loss_delta": -0.4489}}}
    if gate is not None:
        outputs["promotion-gate"] = {"report": str(tmp_path / "gate.md")}
        metadata["promotion-gate"] = {"report": gate}
    if promoted:
        outputs["promote"] = {"event": str(tmp_path / "event.json")}
    return LocalRunResult(
        pipeline="charops-full", version="0.1.0-abc", run_name="main1", run_dir=str(tmp_path),
        status="succeeded", seconds=843.4, params={"base_model": "charops:smollm2-135m",
                                                   "model_name": "charops-smollm2"},
        task_seconds={t: 1.0 for t in order}, outputs=outputs, metadata=metadata,
        parameters={register_task: {"version": 1.0, "model_uri": "file:///store/models/x/1/model"}})


PASSED = {"name": "charops-smollm2", "version": 1.0, "to": "production", "passed": True, "gated": True,
          "reference": "base model charops:smollm2-135m", "failed": "", "table": "", "override": ""}


def test_the_headline_of_a_promoted_run(tmp_path):
    lines = run_headline(_run(tmp_path, gate=PASSED, promoted=True))
    text = "\n".join(lines)
    assert lines[0] == "run main1: succeeded in 14 min 03 s (pipeline charops-full 0.1.0-abc)"
    # The smollm2 preset's tasks are evaluate-2 / register-2 (the else branch): found all the same.
    assert "validation loss 3.091 vs 3.540 for the base model charops:smollm2-135m" in lines
    assert ("vs the base model charops:smollm2-135m on 48 held-out prompts: win 62.5% tie 8.3% lose 29.2%, "
            "Advantage +33.3, 95% CI +12.5..+52.1, sign test p=0.0123") in lines
    assert "  judge: reward model, held-out pair accuracy 90% on 10 pairs" in lines
    assert ("gate: passes against base model charops:smollm2-135m -> charops-smollm2 v1 is production"
            in lines)
    # Three sample replies of the candidate, of different characters first.
    assert "  Theo Marlowe <- question 0" in lines and "  Edie Calloway <- question 1" in lines
    assert "      (candidate) answer 0" in lines and "(baseline)" not in text
    assert lines[-4:-1] == ["next:", "  charops deploy charops-smollm2 --local",
                            "  charops chat --endpoint http://127.0.0.1:8080 --character 'Theo Marlowe'"]
    # No artifact path but run.json's.
    assert str(tmp_path / "dpo") not in text and lines[-1].endswith(str(tmp_path / "run.json"))


def test_a_refusal_names_the_failed_check_and_the_override(tmp_path):
    refused = {**PASSED, "passed": False, "failed": "sign-test p",
               "override": "charops promote charops-smollm2 1 --to production --config reward-judge "
                           "--force --reason 'override: sign-test p failed'"}
    lines = run_headline(_run(tmp_path, gate=refused))
    assert ("gate: REFUSES charops-smollm2 v1 for production (failed: sign-test p); it stays "
            "registered, unpromoted") in lines
    assert lines[-4:-1] == ["  " + refused["override"],
                            "or try it unpromoted: charops deploy charops-smollm2 --local --version 1",
                            "  then: charops chat --endpoint http://127.0.0.1:8080 --character 'Theo Marlowe'"]


def test_a_judge_below_65_percent_is_called_too_weak(tmp_path):
    lines = run_headline(_run(tmp_path, gate=PASSED, promoted=True, accuracy=0.6))
    judge = next(line for line in lines if "judge:" in line)
    assert "60%" in judge and "TOO WEAK TO TRUST" in judge


def test_final_model_is_the_chat_model_never_the_judge(tmp_path):
    """On the tiny default the reward model is the last task with a trained_model: the old
    summary named it as the final model."""
    result = _run(tmp_path, eval_task="evaluate", register_task="register")
    assert final_model(result) == str(tmp_path / "dpo" / "model")
    # Without an evaluation, the last trained model that is not the reward model.
    (tmp_path / "evaluate" / "results" / "eval_summary.json").unlink()
    assert final_model(result) == str(tmp_path / "dpo" / "model")


def test_submit_prints_the_headline_and_paths_only_with_verbose(tmp_path, capsys):
    from charops.cli.pipeline import _print_local

    result = _run(tmp_path, eval_task="evaluate", register_task="register", gate=PASSED, promoted=True)
    _print_local(result)
    quiet = capsys.readouterr().out
    assert "final model" not in quiet and str(tmp_path / "reward") not in quiet
    assert "win 62.5%" in quiet and "charops deploy charops-smollm2 --local" in quiet
    _print_local(result, verbose=True)
    loud = capsys.readouterr().out
    assert f"final model: {tmp_path / 'dpo' / 'model'}" in loud
    assert f"final model: {tmp_path / 'reward' / 'model'}" not in loud


def test_sample_replies_take_three_characters_before_repeating_one(tmp_path):
    results = _results(tmp_path, "c", "b")
    picked = sample_replies(results)
    assert [p["character"] for p in picked] == ["Theo Marlowe", "Edie Calloway", "Theo Marlowe"]
    assert picked[0] == {"character": "Theo Marlowe", "user": "question 0", "reply": "(candidate) answer 0"}
    assert sample_replies(tmp_path / "nowhere") == []


@pytest.mark.parametrize("status", ["failed"])
def test_a_failed_run_says_only_that(tmp_path, status):
    result = _run(tmp_path)
    result.status = status
    assert run_headline(result) == [f"run main1: {status} in 14 min 03 s (pipeline charops-full 0.1.0-abc)"]
    assert json.loads(json.dumps(result.__dict__))  # run.json stays plain JSON
