"""The promotion gate against hand-made eval summaries, and the model card of an entry.

Boundary cases: equal Overall passes ("not lower"), a p-value at or just above alpha fails, an
Advantage equal to the margin fails ("above"), no production version means the base model is
the reference, a production version must be the summary's baseline.

    .venv/bin/python -m pytest tests/unit/test_registry_gate.py -x -q
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from charops.config import load_config
from charops.errors import ConfigError
from charops.registry import (
    RegistryError,
    get_card,
    get_entry,
    history,
    production,
    register,
    stage_of,
    transition,
)
from charops.registry.gate import (
    GateConfig,
    check,
    decide,
    failed_checks,
    gate_markdown,
    gate_table,
    override_command,
    promote,
)
from charops.storage.local import LocalStore
from charops.storage.s3 import S3Store

LINEAGE = {"dataset_sha256": "d" * 64, "base_model": "charops:tiny", "pipeline_version": "0.1.0-abc",
           "run_id": "run-7", "run_name": "nightly-7"}


def summary(advantage=20.0, p=0.01, overall=(3.5, 3.2), safety=(4.0, 4.0),
            baseline="runs/base") -> dict:
    """An eval_summary (charops.eval_summary/v1) with the numbers the gate reads."""
    def dims(overall_mean, safety_mean):
        return {"overall": {"Overall": {"mean": overall_mean, "ci95": [0, 5], "n": 40},
                            "Safety": {"mean": safety_mean, "ci95": [0, 5], "n": 40}},
                "by_category": {}, "by_topic": {}}
    win = (100 + advantage) / 2 - 10
    return {"schema": "charops.eval_summary/v1",
            "candidate": {"label": "candidate", "model": "runs/dpo/model"},
            "baseline": {"label": "baseline", "model": baseline},
            "judge": {"kind": "reward_model", "model": "runs/reward", "rubric": "characterglm-v1"},
            "pointwise": {"dimensions": ["Safety", "Overall"],
                          "candidate": dims(overall[0], safety[0]),
                          "baseline": dims(overall[1], safety[1])},
            "pairwise": {"overall": {"win": win, "tie": 20.0, "lose": win - advantage,
                                     "advantage": advantage, "n": 40, "unjudged": 0,
                                     "sign_test_p": p, "advantage_ci95": [2.0, 38.0]},
                         "by_category": {}, "by_topic": {}},
            "skipped": []}


CFG = GateConfig()


def _result(decision: dict) -> dict[str, bool]:
    """Pass/fail of the checks the gate applies (the others are n/a rows)."""
    return {r["check"]: r["passed"] for r in decision["rows"] if r["applies"]}


def test_a_clear_win_passes_every_check():
    d = decide(summary(), CFG, None, "charops:tiny")
    assert d["passed"] and d["reference"] == "base model charops:tiny"
    assert _result(d) == {"pair-wise Advantage": True, "sign-test p": True,
                          "point-wise Overall": True, "point-wise Safety": True}


@pytest.mark.parametrize(("kwargs", "failing"), [
    ({"overall": (3.2, 3.2)}, None),                      # equal Overall: not lower, passes
    ({"safety": (4.0, 4.0)}, None),                       # equal Safety passes
    ({"overall": (3.19, 3.2)}, "point-wise Overall"),     # a little lower fails
    ({"safety": (3.9, 4.0)}, "point-wise Safety"),
    ({"p": 0.0501}, "sign-test p"),                       # just above alpha
    ({"p": 0.05}, "sign-test p"),                         # at alpha: not below
    ({"p": 0.0499}, None),
    ({"advantage": 5.0}, "pair-wise Advantage"),          # at the margin: not above
    ({"advantage": 5.01}, None),
    ({"advantage": -10.0}, "pair-wise Advantage"),
])
def test_boundaries(kwargs, failing):
    d = decide(summary(**kwargs), CFG, None, "charops:tiny")
    failed = [name for name, ok in _result(d).items() if not ok]
    assert failed == ([failing] if failing else []) and d["passed"] is (failing is None)


def test_margins_come_from_the_config():
    cfg = load_config(GateConfig, "default", ["overall_margin=0.5", "min_advantage=25", "alpha=0.001"])
    d = decide(summary(overall=(3.6, 3.2), advantage=20.0, p=0.002), cfg, None)
    assert _result(d) == {"pair-wise Advantage": False, "sign-test p": False,
                          "point-wise Overall": False, "point-wise Safety": True}
    assert decide(summary(overall=(3.7, 3.2), advantage=26, p=0.0009), cfg, None)["passed"]


def test_missing_numbers_fail_with_a_note():
    s = summary()
    s["pairwise"] = None
    s["pointwise"]["baseline"] = None
    s["skipped"] = ["pair-wise: no baseline given"]
    d = decide(s, CFG, None)
    assert not d["passed"]
    notes = {r["check"]: r["note"] for r in d["rows"]}
    assert "no pair-wise" in notes["sign-test p"]
    assert notes["point-wise Overall"] == "missing: no point-wise Overall for the baseline"
    nothing = decide(None, CFG, None)
    assert not nothing["passed"] and "evaluate it first" in nothing["rows"][0]["note"]


def _model(root: Path, weights: bytes, characters: list[dict] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "qwen2"}\n', encoding="utf-8")
    (root / "model.safetensors").write_bytes(weights)
    if characters is not None:
        (root / "characters.jsonl").write_text(
            "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in characters), encoding="utf-8")
    (root / "training_summary.json").write_text(json.dumps({
        "stage": "dpo", "config": {"beta": 0.1, "learning_rate": 5e-6, "model": "/in/sft"},
        "steps": 12, "final_loss": 0.61, "loss_curve": [{"step": 1, "loss": 0.69}],
    }), encoding="utf-8")
    return root


def _reports(root: Path, eval_summary: dict | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics.json").write_text('{"model": {"loss": 2.5}}\n', encoding="utf-8")
    if eval_summary is not None:
        (root / "eval_summary.json").write_text(json.dumps(eval_summary), encoding="utf-8")
    return root


def _publish(store, tmp_path: Path, i: int, eval_summary: dict | None) -> dict:
    return register(store, _model(tmp_path / f"m{i}", f"weights {i}".encode()), "chat",
                    {"model.loss": 2.0 + i}, LINEAGE,
                    reports_dir=_reports(tmp_path / f"r{i}", eval_summary))


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_promote_with_no_production_compares_with_the_base_model(tmp_path, store):
    _publish(store, tmp_path, 1, summary(p=0.06))
    decision, event = promote(store, "chat", 1, "production", actor="ana", reason="", config=CFG)
    assert event is None and not decision["passed"] and production(store, "chat") is None
    table = gate_table(decision)
    assert "chat v1 vs base model charops:tiny: refuses" in table
    assert any(line.startswith("sign-test p") and "0.06" in line and "FAIL" in line
               for line in table.splitlines())
    assert history(store, "chat") == []
    assert "| sign-test p | 0.06 | - | < 0.05 | FAIL |" in gate_markdown(decision)

    _publish(store, tmp_path, 2, summary())
    decision, event = promote(store, "chat", 2, "production", actor="ana", reason="ok", config=CFG)
    assert decision["passed"] and event["to"] == "production" and not event["force"]
    assert event["gate"]["passed"] and event["gate"]["rows"] == decision["rows"]
    assert production(store, "chat")["version"] == 2


def test_a_production_version_must_be_the_baseline(tmp_path, store):
    first = _publish(store, tmp_path, 1, summary())
    promote(store, "chat", 1, "production", actor="a", reason="", config=CFG)
    # v2 was evaluated against the base model only: that does not show it beats v1.
    _publish(store, tmp_path, 2, summary(advantage=40, p=0.001))
    decision, event = promote(store, "chat", 2, "production", actor="a", reason="", config=CFG)
    assert event is None and _result(decision)["baseline"] is False
    assert decision["reference"] == "production v1"
    # v3 was evaluated against v1's registered model: the gate compares.
    _publish(store, tmp_path, 3, summary(baseline=first["model_uri"]))
    decision, event = promote(store, "chat", 3, "production", actor="a", reason="", config=CFG)
    assert decision["passed"] and production(store, "chat")["version"] == 3
    assert stage_of(store, "chat", 1) == "archived"
    with pytest.raises(RegistryError, match="production version already"):
        check(store, "chat", 3, CFG)


def test_force_overrides_a_refusal_and_records_who_and_why(tmp_path, store):
    _publish(store, tmp_path, 1, summary(overall=(3.0, 3.2)))
    with pytest.raises(RegistryError, match="needs --reason"):
        promote(store, "chat", 1, "production", actor="ana", reason="", config=CFG, force=True)
    decision, event = promote(store, "chat", 1, "production", actor="ana",
                              reason="judge is miscalibrated on Overall", config=CFG, force=True)
    assert not decision["passed"] and event["force"] is True
    assert (event["actor"], event["reason"]) == ("ana", "judge is miscalibrated on Overall")
    assert history(store, "chat")[-1]["gate"]["passed"] is False


def test_staging_is_gated_unless_configured_otherwise(tmp_path, store):
    _publish(store, tmp_path, 1, summary(advantage=0.0))
    _, event = promote(store, "chat", 1, "staging", actor="a", reason="", config=CFG)
    assert event is None
    decision, event = promote(store, "chat", 1, "staging", actor="a", reason="",
                              config=GateConfig(gate_staging=False))
    assert decision is None and event["to"] == "staging" and event["gate"] is None
    # Already there: nothing new, no gate.
    decision, again = promote(store, "chat", 1, "staging", actor="b", reason="", config=CFG)
    assert decision is None and again == event
    with pytest.raises(RegistryError, match="stage 'archived'"):
        promote(store, "chat", 1, "archived", actor="a", reason="", config=CFG)


def test_model_card_lists_lineage_characters_training_eval_and_file_hashes(tmp_path, store):
    chars = [{"type": "profile", "name": "林小满", "category": "daily life", "language": "zh",
              "identity": "一个爱看书的学生", "likes": ["tea"]},
             {"type": "profile", "name": "Captain Reed", "category": "games & videos",
              "language": "en", "identity": "a sea captain"}]
    model = _model(tmp_path / "m", b"weights", chars)
    eval_summary = summary()
    entry = register(store, model, "chat", {"model.loss": 2.5}, LINEAGE,
                     reports_dir=_reports(tmp_path / "r", eval_summary))
    card = get_card(store, "chat", 1)
    assert (card["name"], card["version"], card["created_at"]) == ("chat", 1, entry["created_at"])
    assert card["pipeline"] == {"version": "0.1.0-abc", "run_id": "run-7", "run_name": "nightly-7"}
    assert card["dataset_sha256"] == "d" * 64 and card["base_model"] == "charops:tiny"
    assert card["training"]["stage"] == "dpo" and card["training"]["config"]["beta"] == 0.1
    assert "loss_curve" not in card["training"]
    assert card["eval_summary"] == eval_summary
    assert [c["name"] for c in card["characters"]] == ["林小满", "Captain Reed"]
    assert "likes" not in card["characters"][0]
    expected = {f"model/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
                for p in model.iterdir()}
    expected["reports/eval_summary.json"] = hashlib.sha256(
        (tmp_path / "r" / "eval_summary.json").read_bytes()).hexdigest()
    assert {k: v["sha256"] for k, v in card["files"].items() if k in expected} == expected
    assert set(card["files"]) == set(expected) | {"reports/metrics.json"}
    assert entry["card_uri"] == store.url_for("models/chat/1/card.json")
    readme = store.get_file("models/chat/1/README.md", tmp_path / "README.md").path.read_text()
    assert readme.startswith("# chat v1\n")
    assert "| 林小满 | daily life | zh | 一个爱看书的学生 |" in readme
    assert "| overall | 50 | 20 | 30 | 20 | 40 | 0.01 |" in readme
    assert "| Overall | 3.5 | 3.2 |" in readme
    assert f"| model/model.safetensors | 7 | `{expected['model/model.safetensors']}` |" in readme
    assert "nightly-7" in readme and "\"beta\": 0.1" in readme


def test_card_without_characters_or_evaluation(tmp_path, store):
    register(store, _model(tmp_path / "m", b"w"), "chat", {}, LINEAGE)
    card = get_card(store, "chat")
    assert card["characters"] == [] and card["eval_summary"] is None
    bad = _model(tmp_path / "bad", b"x")
    (bad / "characters.jsonl").write_text('{"name": "ok"}\n{"category": "x"}\n', encoding="utf-8")
    with pytest.raises(Exception, match="characters.jsonl line 2: a character profile needs a 'name'"):
        register(store, bad, "chat", {}, LINEAGE)
    assert get_entry(store, "chat")["version"] == 1
    assert store.list("models/chat/2/") == []  # refused before anything was uploaded


def test_card_and_gate_on_s3(tmp_path, s3_server, s3_bucket):
    store = S3Store(s3_server["endpoint"], s3_bucket, s3_server["access_key"],
                    s3_server["secret_key"], secure=False, prefix="reg")
    first = _publish(store, tmp_path, 1, summary())
    assert get_card(store, "chat", 1)["eval_summary"]["pairwise"]["overall"]["advantage"] == 20.0
    assert promote(store, "chat", 1, "production", actor="a", reason="", config=CFG)[1]
    better = copy.deepcopy(summary(baseline=first["model_uri"]))
    _publish(store, tmp_path, 2, better)
    assert promote(store, "chat", 2, "production", actor="a", reason="", config=CFG)[0]["passed"]
    assert production(store, "chat")["version"] == 2
    transition(store, "chat", 1, "staging", actor="a", reason="compare")
    assert [e["to"] for e in history(store, "chat")] == ["production", "production", "staging"]


def test_a_promotion_in_between_gate_and_change_is_not_slipped_past(tmp_path, store, monkeypatch):
    """v2 is gated against the base model; before its event is written someone promotes v3:
    v2's promotion is refused rather than archiving v3 without comparing with it."""
    import charops.registry.gate as gate_module

    _publish(store, tmp_path, 1, summary())
    _publish(store, tmp_path, 2, summary())
    real_check = gate_module.check

    def check_then_someone_promotes(*args, **kwargs):
        decision = real_check(*args, **kwargs)
        transition(store, "chat", 1, "production", actor="other", reason="meanwhile")
        return decision

    monkeypatch.setattr(gate_module, "check", check_then_someone_promotes)
    with pytest.raises(RegistryError, match="production changed to v1 while v2 was gated against "
                                            "the base model"):
        promote(store, "chat", 2, "production", actor="a", reason="", config=CFG)
    assert production(store, "chat")["version"] == 1
    assert [e["actor"] for e in history(store, "chat")] == ["other"]


def _reward_judged() -> dict:
    """What the reward-model judge produces: Overall only, and its held-out pair accuracy."""
    s = summary()
    s["pointwise"]["dimensions"] = ["Overall"]
    for side in ("candidate", "baseline"):
        del s["pointwise"][side]["overall"]["Safety"]
    s["judge"]["pair_accuracy"] = 0.8
    return s


def test_the_default_gate_fails_safety_for_a_judge_without_it_and_says_so():
    s = _reward_judged()
    strict = decide(s, CFG, None)
    row = next(r for r in strict["rows"] if r["check"] == "point-wise Safety")
    assert not strict["passed"] and not row["passed"] and row["applies"]
    assert row["note"] == ("not judged: the reward_model judge scores Overall "
                           "(a gate for this judge leaves 'safety' out of checks)")
    assert failed_checks(strict) == ["point-wise Safety"]


def test_the_reward_judge_gate_asks_only_for_what_the_judge_measures():
    """configs/promote/reward-judge.yaml: no Safety check (shown n/a), the judge's accuracy instead."""
    cfg = load_config(GateConfig, "reward-judge", [])
    assert "safety" not in cfg.checks and "judge_accuracy" in cfg.checks
    decision = decide(_reward_judged(), cfg, None, base_model="charops:smollm2-135m")
    assert decision["passed"]
    safety = next(r for r in decision["rows"] if r["check"] == "point-wise Safety")
    assert safety["passed"] and not safety["applies"]
    assert "not a check of this gate" in safety["note"]
    table = gate_table({**decision, "name": "chat", "version": 1})
    assert any(line.startswith("point-wise Safety") and " n/a " in line for line in table.splitlines())
    assert "judge pair accuracy" in table and "0.8 " in table
    # A weak judge refuses the promotion, naming the check.
    weak = _reward_judged()
    weak["judge"]["pair_accuracy"] = 0.6
    refused = {**decide(weak, cfg, None), "name": "chat", "version": 3}
    assert not refused["passed"] and failed_checks(refused) == ["judge pair accuracy"]
    assert override_command(refused, "production", "reward-judge") == (
        "charops promote chat 3 --to production --config reward-judge --force "
        "--reason 'override: judge pair accuracy failed'")
    # Overall stays a check of this gate: a judge that scores no Overall fails it.
    s = _reward_judged()
    s["pointwise"]["dimensions"] = ["Safety"]
    assert failed_checks(decide(s, cfg, None)) == ["point-wise Overall"]


def test_checks_are_validated():
    with pytest.raises(ConfigError, match="checks"):
        load_config(GateConfig, "default", ["checks=[advantage,honesty]"])
    with pytest.raises(ConfigError, match="checks"):
        load_config(GateConfig, "default", ["checks=[]"])
