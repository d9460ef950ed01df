"""Multi-turn evaluation (charops.eval.multiturn): signals and probes against hand computations,
rollouts on the micro model, the reward-model conversation judge, and the stage end to end.

    .venv/bin/python -m pytest tests/unit/test_eval_multiturn.py -x -q
"""

import json
import random
from types import SimpleNamespace

import pytest

from charops.eval.multiturn.probes import (
    boundary_questions,
    deflects,
    memory_fact,
    profile_year,
    recalled,
)
from charops.eval.multiturn.signals import conversation_signals, cross_turn_repetition, slope


def _conv(replies, category="daily-life", memory=None, model="candidate", cid="c1"):
    turns = [{"user": f"u{i}", "reply": r, "probe": None} for i, r in enumerate(replies)]
    return {"id": cid, "model": model, "category": category, "topic": "chit-chat", "turns": turns, "memory": memory}


# --- signals, by hand ------------------------------------------------------------------------

def test_cross_turn_repetition_hand_computed():
    # Reply 2 "a b c d": trigrams (a,b,c), (b,c,d); (a,b,c) was in reply 1 -> 1/2.
    # Reply 3 "x y z": none seen -> 0.   Mean over replies 2 and 3: 0.25.
    assert cross_turn_repetition(["a b c", "a b c d", "x y z"]) == pytest.approx(0.25)
    # Saying the same thing every turn: every later reply is fully repeated.
    assert cross_turn_repetition(["the tea is warm"] * 4) == pytest.approx(1.0)
    assert cross_turn_repetition(["only one reply here"]) is None


def test_length_slope_hand_computed():
    # x = 0,1,2; y = 10,20,30 -> slope 10; y = 9,6,3 -> -3.
    assert slope([10, 20, 30]) == pytest.approx(10.0)
    assert slope([9, 6, 3]) == pytest.approx(-3.0)
    assert slope([5]) is None


def test_conversation_signals_hand_computed():
    a = _conv(["Hello there friend", "As an AI language model I cannot", "Hello there friend again"],
              memory={"recalled": True})
    b = _conv(["Short", "Also short text", "As an AI I must say"], memory={"recalled": False}, cid="c2")
    block = conversation_signals([a, b])
    assert block["turns"] == 3 and block["conversations"] == 2
    # Role breaks: turn 1: none; turn 2: a only; turn 3: b only ("As an AI").
    assert block["role_break_by_turn"] == [0.0, 0.5, 0.5]
    assert block["role_break_rate"] == pytest.approx(2 / 6)
    # Lengths at turn 1: 18 and 5 -> 11.5.
    assert block["length_by_turn"][0] == pytest.approx((18 + 5) / 2)
    slope_a = slope([18, 32, 24])
    slope_b = slope([5, 15, 19])
    assert block["length_slope"] == pytest.approx((slope_a + slope_b) / 2)
    assert block["memory_recall"] == 0.5 and block["memory_probes"] == 2


# --- probes ----------------------------------------------------------------------------------

def test_memory_fact_is_seeded_and_recall_is_a_containment_check():
    f1 = memory_fact("en", random.Random(7))
    f2 = memory_fact("en", random.Random(7))
    assert f1 == f2 and f1["answer"] in f1["statement"] and f1["answer"] not in f1["question"]
    assert recalled(f"Of course I remember, it's {f1['answer'].upper()}!", f1)
    assert not recalled("I have no idea, sorry.", f1)
    zh = memory_fact("zh", random.Random(1))
    assert zh["statement"].startswith("对了") and recalled(f"当然记得，叫{zh['answer']}。", zh)


def test_boundary_questions_follow_the_profile_era_and_language():
    assert profile_year({"extra": {"sample_era": "Paris, 1889"}}) == 1889
    assert profile_year({"identity": "a baker"}) == 2026
    qs = boundary_questions({"language": "en", "extra": {"sample_era": "1889"}}, random.Random(0))
    assert [q["kind"] for q in qs] == ["later_events", "other_universe", "technical"]
    assert "1949" in qs[0]["question"]  # later events: 60 years after the era
    zh = boundary_questions({"language": "zh"}, random.Random(0))
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in q["question"]) for q in zh)


def test_deflection_rule():
    assert deflects("(frowns) Never heard of it, dear. Is that one of those city things?", "en")
    assert deflects("What's a Kubernetes? Sounds like a sea creature.", "en")
    assert not deflects("Brazil won it, 3-1 in the final, a great match.", "en")
    assert deflects("（挠头）这个我可不知道。", "zh")
    assert not deflects("是巴西队夺冠的。", "zh")


# --- rollouts on the micro model --------------------------------------------------------------

def _settings(**kw):
    from charops.eval.generate import GenerationSettings

    return GenerationSettings(max_new_tokens=4, batch_size=4, **kw)


def test_load_starts_gives_profile_greeting_and_script(tmp_path):
    from charops.eval.multiturn.users import load_starts
    from charops.io import write_jsonl

    (tmp_path / "sft").mkdir()
    write_jsonl(tmp_path / "characters.jsonl", [{"name": "Tom", "language": "en", "category": "games-videos",
                                                 "greeting": "(waves) Hey!"}])
    write_jsonl(tmp_path / "sft" / "validation.jsonl", [
        {"id": "a", "character": "Tom", "topic": "chit-chat", "language": "en",
         "messages": [{"role": "system", "content": "You are Tom."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Games?"},
                      {"role": "assistant", "content": "Yes"}]},
        {"id": "b", "character": "Tom", "topic": "interview", "language": "en",
         "messages": [{"role": "system", "content": "You are Tom."}, {"role": "user", "content": "Tea?"},
                      {"role": "assistant", "content": "Always"}]}])
    starts = {s["dialogue"]: s for s in load_starts(tmp_path, seed=0)}
    a = starts["a"]
    assert a["opening"] == [{"role": "system", "content": "You are Tom."},
                            {"role": "assistant", "content": "(waves) Hey!"}]
    assert a["script"] == ["Hi", "Games?", "Tea?"]  # its own user turns, then the character's other dialogue
    assert a["category"] == "games-videos" and a["language"] == "en"
    assert load_starts(tmp_path, seed=0) == load_starts(tmp_path, seed=0)


def test_rollout_pairs_models_on_the_same_user_lines_with_the_memory_probe(micro_model_dir, micro_ref_model_dir,
                                                                          eval_dataset_dir):
    from charops.eval.generate import load_model
    from charops.eval.multiturn.rollout import rollout
    from charops.eval.multiturn.users import ScriptedUser, load_starts

    starts = load_starts(eval_dataset_dir, limit=2, seed=0)
    a = rollout(load_model(str(micro_model_dir)), "candidate", starts, ScriptedUser(), 3, _settings(), memory=(0, 2))
    b = rollout(load_model(str(micro_ref_model_dir)), "baseline", starts, ScriptedUser(), 3, _settings(),
                memory=(0, 2))
    for ca, cb, s in zip(a, b, starts, strict=True):
        assert [t["user"] for t in ca["turns"]] == [t["user"] for t in cb["turns"]]  # paired
        assert len(ca["messages"]) == len(s["opening"]) + 2 * 3
        assert ca["turns"][0]["probe"] == "memory_statement" and ca["memory"]["answer"] in ca["turns"][0]["user"]
        assert ca["turns"][0]["user"].startswith(s["script"][0])
        assert ca["turns"][2]["probe"] == "memory_question"
        assert ca["memory"]["recalled"] is (ca["memory"]["answer"].lower().replace(" ", "")
                                            in ca["turns"][2]["reply"].lower().replace(" ", ""))
        assert (ca["memory"]["stated_turn"], ca["memory"]["asked_turn"]) == (1, 3)
        assert ca["messages"][-1] == {"role": "assistant", "content": ca["turns"][2]["reply"]}


def test_rollout_refuses_a_probe_past_the_last_turn(micro_model_dir, eval_dataset_dir):
    from charops.errors import DataError
    from charops.eval.generate import load_model
    from charops.eval.multiturn.rollout import rollout
    from charops.eval.multiturn.users import ScriptedUser, load_starts

    starts = load_starts(eval_dataset_dir, limit=1)
    with pytest.raises(DataError, match="memory probe"):
        rollout(load_model(str(micro_model_dir)), "c", starts, ScriptedUser(), 2, _settings(), memory=(0, 2))


# --- the reward-model conversation judge ------------------------------------------------------

def _cfg(tmp_path, **kw):
    base = dict(reward_model=None, tie_margin=None, reward_batch_size=4, pointwise=True, judge="reward_model",
                output_dir=str(tmp_path), judge_cache=None, progress=False, seed=0, bootstrap_resamples=50,
                turns=3, max_conversations=3, user_simulator="scripted", memory_probe=True, memory_turn=1,
                memory_gap=2, boundary_probes=True, conversation_rubric="characterbench-v1", reuse_replies=False,
                temperature=0.0, top_p=1.0, max_new_tokens=4, repetition_penalty=1.0, batch_size=4,
                max_context_tokens=0, dtype="auto")
    base.update(kw)
    return SimpleNamespace(**base)


def test_reward_judge_scores_a_conversation_by_the_sum_of_its_turn_rewards(tmp_path, micro_model_dir,
                                                                           micro_ref_model_dir, eval_dataset_dir,
                                                                           micro_reward_model_dir):
    from charops.eval.generate import load_model
    from charops.eval.judges import calibrated_score, load_reward_judge
    from charops.eval.multiturn.judging import reward_model_conversations, turn_prefixes
    from charops.eval.multiturn.rollout import rollout
    from charops.eval.multiturn.users import ScriptedUser, load_starts
    from charops.train.reward import score_conversations

    starts = load_starts(eval_dataset_dir, limit=2)
    convs = (rollout(load_model(str(micro_model_dir)), "candidate", starts, ScriptedUser(), 2, _settings())
             + rollout(load_model(str(micro_ref_model_dir)), "baseline", starts, ScriptedUser(), 2, _settings()))
    cfg = _cfg(tmp_path, reward_model=str(micro_reward_model_dir), tie_margin=0.0)
    pairs = [(convs[0], convs[2]), (convs[1], convs[3])]
    result = reward_model_conversations(convs, pairs, cfg, None)

    model, tok, trained, _ = load_reward_judge(cfg)
    for rec, point in zip(convs, result["pointwise"], strict=True):
        # By hand: each prefix ending with one of the character's simulated replies, scored alone.
        by_hand = [score_conversations(model, tok, [p], 1)[0] for p in turn_prefixes(rec)]
        assert point["turn_rewards"] == pytest.approx(by_hand, abs=1e-4)
        assert point["reward"] == pytest.approx(sum(by_hand), abs=1e-4)
        assert point["scores"]["Overall"] == calibrated_score(sum(by_hand) / 2, trained["calibration"])
    for (a, b), rec in zip(pairs, result["pairwise"], strict=True):
        ra = next(p["reward"] for p in result["pointwise"] if (p["id"], p["model"]) == (a["id"], a["model"]))
        rb = next(p["reward"] for p in result["pointwise"] if (p["id"], p["model"]) == (b["id"], b["model"]))
        expect = "tie" if ra == rb else ("win" if ra > rb else "lose")  # tie_margin 0
        assert rec["verdict"] == expect and (rec["a"], rec["b"]) == ("candidate", "baseline")
    assert result["info"]["conversation_score"] == "sum of per-turn rewards"


# --- summary blocks ----------------------------------------------------------------------------

def test_memory_and_boundary_blocks_hand_computed():
    from charops.eval.multiturn import boundary_block, memory_block

    convs = [{"category": "celebrity", "memory": {"recalled": True}}, {"category": "celebrity", "memory": {"recalled": False}},
             {"category": "virtual-love", "memory": {"recalled": True}}, {"category": "virtual-love", "memory": None}]
    m = memory_block(convs)
    assert (m["n"], m["yes"], m["rate"]) == (3, 2, pytest.approx(2 / 3))
    assert m["by_category"]["celebrity"]["rate"] == 0.5 and m["by_category"]["virtual-love"]["rate"] == 1.0
    recs = [{"category": "celebrity", "kind": "technical", "deflected": True, "judged_by": "rule"},
            {"category": "celebrity", "kind": "later_events", "deflected": False, "judged_by": "rule"},
            {"category": "games-videos", "kind": "technical", "deflected": True, "judged_by": "rule"},
            {"category": "games-videos", "kind": "later_events", "deflected": None, "judged_by": "rule"}]
    b = boundary_block(recs)
    assert (b["n"], b["yes"], b["rate"]) == (3, 2, pytest.approx(2 / 3))
    assert b["by_category"]["games-videos"] == {"n": 1, "yes": 1, "rate": 1.0}
    assert b["by_kind"]["technical"]["rate"] == 1.0 and b["by_kind"]["later_events"]["rate"] == 0.0


def test_evaluate_conversations_end_to_end_with_the_reward_judge(tmp_path, micro_model_dir, micro_ref_model_dir,
                                                                 eval_dataset_dir, micro_reward_model_dir):
    from charops.eval.multiturn import FILES, evaluate_conversations
    from charops.io import read_jsonl

    cfg = _cfg(tmp_path, reward_model=str(micro_reward_model_dir))
    block = evaluate_conversations(cfg, eval_dataset_dir, [("candidate", str(micro_model_dir)),
                                                           ("baseline", str(micro_ref_model_dir))])
    for name in FILES:
        assert (tmp_path / name).is_file(), name
    convs = list(read_jsonl(tmp_path / "conversations.jsonl"))
    pairs = list(read_jsonl(tmp_path / "conversation_pairwise.jsonl"))
    assert len(convs) == 2 * block["conversations"] and len(pairs) == block["conversations"]
    # The table is the hand count of the stored verdicts.
    verdicts = [p["verdict"] for p in pairs]
    n = len(verdicts)
    overall = block["pairwise"]["overall"]
    assert overall["win"] == pytest.approx(100 * verdicts.count("win") / n)
    assert overall["advantage"] == pytest.approx(100 * (verdicts.count("win") - verdicts.count("lose")) / n)
    assert set(block["pairwise"]["by_category"]) == {c["category"] for c in convs}
    assert set(block["pairwise"]["by_topic"]) == {c["topic"] for c in convs}
    boundary = list(read_jsonl(tmp_path / "boundary.jsonl"))
    assert {b["judged_by"] for b in boundary} == {"rule"}
    cand = [b for b in boundary if b["model"] == "candidate"]
    assert block["boundary"]["candidate"]["rate"] == pytest.approx(sum(b["deflected"] for b in cand) / len(cand))
    assert block["memory"]["candidate"]["n"] == block["conversations"]
    assert block["judge"]["kind"] == "reward_model" and block["user"]["kind"] == "scripted"
    json.dumps(block)  # the summary block is JSON as it is

    # Conversations are stored before judging: re-judging reads them back, generating nothing.
    again = evaluate_conversations(_cfg(tmp_path, reward_model=str(micro_reward_model_dir), reuse_replies=True),
                                   eval_dataset_dir, [("candidate", "no-such-model"), ("baseline", "no-such-model")])
    assert again["pairwise"]["overall"] == overall and again["user"]["kind"] == "reused"


def _mt_summary():
    block = {"overall": {"n": 4, "win": 50.0, "tie": 25.0, "lose": 25.0, "advantage": 25.0,
                         "advantage_ci95": [-50.0, 75.0], "sign_test_p": 1.0, "unjudged": 0}}
    return {"schema": "charops.eval_summary/v1", "candidate": {"label": "candidate"}, "baseline": {"label": "baseline"},
            "judge": {"kind": "none"}, "skipped": [],
            "multiturn": {"turns": 6, "conversations": 4, "models": ["candidate", "baseline"],
                          "user": {"kind": "scripted"}, "judge": {"kind": "reward_model", "model": "rm",
                                                                 "conversation_score": "sum of per-turn rewards"},
                          "memory_probe": {"stated_turn": 1, "asked_turn": 4},
                          "pairwise": {**block, "by_category": {"celebrity": block["overall"]},
                                       "by_topic": {"interview": block["overall"]}},
                          "pointwise": None,
                          "memory": {"candidate": {"n": 4, "yes": 3, "rate": 0.75, "by_category": {}},
                                     "baseline": {"n": 4, "yes": 1, "rate": 0.25, "by_category": {}}},
                          "boundary": {"candidate": {"n": 3, "yes": 2, "rate": 2 / 3, "judged_by": ["rule"],
                                                     "by_category": {"celebrity": {"n": 3, "yes": 2, "rate": 2 / 3}},
                                                     "by_kind": {"technical": {"n": 1, "yes": 1, "rate": 1.0}}}},
                          "signals": {"candidate": {"cross_turn_repetition": 0.125, "role_break_rate": 0.0,
                                                    "length_slope": -2.5, "memory_recall": 0.75,
                                                    "role_break_by_turn": [0.0, 0.0], "length_by_turn": [40, 35]}},
                          "skipped": []}}


def test_report_shows_the_multiturn_sections_in_markdown_and_html():
    from charops.eval.render_html import render_html
    from charops.eval.render_md import render_markdown
    from charops.eval.summary import Results, check_eval_summary

    results = Results(check_eval_summary(_mt_summary(), "test"))
    md, html = render_markdown(results), render_html(results)
    for title in ("Multi-turn: whole conversations", "Conversation-level pair-wise", "Conversations per category",
                  "Conversations per topic", "Memory probe", "Knowledge boundary", "Conversation signals"):
        assert title in md and title in html, title
    assert "75.0% (3/4)" in md and "66.7% (2/3)" in md and "+25.0" in md
    assert "sum of per-turn rewards" in md and "marker rule" in md
    assert "75.0% (3/4)" in html and "-2.500" in html


def test_cli_eval_run_mode_both_and_multiturn(tmp_path, micro_model_dir, micro_ref_model_dir, eval_dataset_dir,
                                             micro_reward_model_dir):
    from typer.testing import CliRunner

    from charops.cli.main import app
    from charops.eval.metrics import headline_metrics

    common = [f"model={micro_model_dir}", f"baseline_model={micro_ref_model_dir}", f"dataset={eval_dataset_dir}",
              f"reward_model={micro_reward_model_dir}", "max_prompts=2", "max_new_tokens=4", "batch_size=4",
              "bootstrap_resamples=50", "turns=3", "memory_gap=2", "max_conversations=2", "heldout=false"]
    both = tmp_path / "both"
    result = CliRunner().invoke(app, ["eval", "run", *common, f"output_dir={both}", "mode=both", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((both / "eval_summary.json").read_text())
    assert summary["pairwise"]["overall"]["n"] == 2  # single replies: two prompts
    mt = summary["multiturn"]
    assert mt["conversations"] == 2 and mt["turns"] == 3 and mt["judge"]["kind"] == "reward_model"
    head = headline_metrics(summary)
    assert head["multiturn_advantage"] == mt["pairwise"]["overall"]["advantage"]
    assert head["multiturn_memory_recall"] == mt["memory"]["candidate"]["rate"]
    assert "Multi-turn: whole conversations" in (both / "report.md").read_text()

    only = tmp_path / "only"
    result = CliRunner().invoke(app, ["eval", "run", *common, f"output_dir={only}", "mode=multiturn", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((only / "eval_summary.json").read_text())
    assert summary["pairwise"] is None and summary["multiturn"]["pairwise"]["overall"]["n"] == 2
    assert any("mode=multiturn" in s for s in summary["skipped"])
    assert not (only / "replies.jsonl").exists() and (only / "conversations.jsonl").is_file()

    bad = CliRunner().invoke(app, ["eval", "run", *common, f"output_dir={tmp_path / 'bad'}", "mode=multiturn",
                                   "turns=2", "memory_gap=3", "-q"])
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and "memory probe" in bad.output


# --- the LLM path against charops's own server -------------------------------------------------

@pytest.fixture(scope="module")
def llm_server(tmp_path_factory, serve_model_dir):
    """The micro model behind `charops deploy --model` (a subprocess on a free loopback port), as
    the simulated user and as the judge; its structured output (response_format json_schema)
    makes even random weights answer in the rubric's shape. Positions are extended because the
    conversation rubric's prompts are long in the micro tokenizer (English is nearly per letter)."""
    import shutil

    from conftest import ServerProcess

    base = tmp_path_factory.mktemp("multiturn_live")
    model = base / "model"
    shutil.copytree(serve_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 32768}))
    server = ServerProcess(["charops-judge", "--model", str(model), "--max-tokens-cap", "1024",
                            "--max-batch-size", "8"], base / "server.log")
    server.wait_ready()
    yield server
    server.stop()


@pytest.mark.slow
def test_llm_user_and_llm_judge_against_charops_deploy(tmp_path, llm_server, micro_model_dir, micro_ref_model_dir,
                                                        eval_dataset_dir, monkeypatch):
    from charops.eval.multiturn import evaluate_conversations
    from charops.eval.rubric import load_rubric
    from charops.io import read_jsonl

    monkeypatch.delenv("CHAROPS_JUDGE_API_KEY", raising=False)
    url = f"{llm_server.url}/openai/v1"
    cfg = _cfg(tmp_path, judge="openai", user_simulator="openai", judge_base_url=url, judge_model="charops-judge",
               user_base_url=None, user_model=None, judge_timeout_s=120.0, judge_max_retries=3, judge_backoff_s=0.2,
               judge_concurrency=4, judge_rate_limit=0.0, judge_max_tokens=1024, turns=2, memory_gap=1,
               max_conversations=2)
    block = evaluate_conversations(cfg, eval_dataset_dir, [("candidate", str(micro_model_dir)),
                                                           ("baseline", str(micro_ref_model_dir))])
    convs = list(read_jsonl(tmp_path / "conversations.jsonl"))
    # The LLM wrote the user's lines (not the script) in every conversation.
    assert {(t["user_source"], t.get("user_error")) for c in convs for t in c["turns"]
            if t["probe"] != "memory_question"} == {("llm", None)}
    assert block["user"] == {"kind": "openai", "model": "charops-judge", "base_url": url}
    # Verdicts and scores parsed in both orders, on the conversation rubric.
    rubric = load_rubric("characterbench-v1")
    for row in read_jsonl(tmp_path / "conversation_pairwise.jsonl"):
        assert row["error"] is None and row["verdict"] in ("win", "tie", "lose"), row
    for row in read_jsonl(tmp_path / "conversation_pointwise.jsonl"):
        assert row["error"] is None and set(row["scores"]) == set(rubric.keys), row
    assert block["pairwise"]["overall"]["n"] == 2 and block["pairwise"]["overall"]["unjudged"] == 0
    # Boundary questions written by the LLM where it answered, judged by it.
    boundary = list(read_jsonl(tmp_path / "boundary.jsonl"))
    assert {b["judged_by"] for b in boundary} == {"openai:charops-judge"}
    assert all(b["deflected"] in (True, False) for b in boundary)
    assert {b["source"] for b in boundary} <= {"llm", "template"}
    assert block["boundary"]["candidate"]["judged_by"] == ["openai:charops-judge"]


def test_user_line_parsing():
    from charops.eval.multiturn.users import parse_user_line
    from charops.eval.rubric import AnswerError

    assert parse_user_line('{"message": "  How was\\nyour day? "}') == "How was your day?"
    assert parse_user_line('"Plain text from an endpoint without structured output"') == \
        "Plain text from an endpoint without structured output"
    with pytest.raises(AnswerError):
        parse_user_line('{"message": "   "}')


def test_gate_can_require_multiturn_advantage_not_lower():
    from charops.registry.gate import GateConfig, decide

    def summary(conv_adv):
        s = {"schema": "charops.eval_summary/v1", "candidate": {"label": "candidate", "model": "c"},
             "baseline": {"label": "baseline", "model": "b"}, "judge": {"kind": "reward_model"},
             "pairwise": {"overall": {"advantage": 30.0, "sign_test_p": 0.01}}}
        if conv_adv is not None:
            s["multiturn"] = {"pairwise": {"overall": {"advantage": conv_adv}}}
        return s

    def row(decision):
        return next(r for r in decision["rows"] if r["key"] == "multiturn")

    cfg = GateConfig(checks=["advantage", "sign_test", "multiturn"])
    assert decide(summary(0.0), cfg, None, "base")["passed"]           # not lower: equal is enough
    refused = decide(summary(-12.5), cfg, None, "base")
    assert not refused["passed"] and row(refused)["candidate"] == -12.5 and not row(refused)["passed"]
    missing = row(decide(summary(None), cfg, None, "base"))
    assert not missing["passed"] and "mode=multiturn" in missing["note"]
    # Not in checks (the default): shown as n/a, never decides.
    default = decide(summary(-12.5), GateConfig(checks=["advantage", "sign_test"]), None, "base")
    assert default["passed"] and not row(default)["applies"]
    stricter = GateConfig(checks=["multiturn"], min_multiturn_advantage=10.0)
    assert not decide(summary(5.0), stricter, None, "base")["passed"]
