"""Judging whole conversations and knowledge-boundary replies.

    from charops.eval.multiturn.judging import CONVERSATION_JUDGES, judge_boundary
    result = CONVERSATION_JUDGES["reward_model"](conversations, pairs, cfg, rubric)
    boundary = judge_boundary(probe_records, cfg)     # rule, or the LLM judge with judge=openai

Conversation judges return ``{"pointwise": [...], "pairwise": [...], "info": {...}}`` in the
record shapes of the single-turn judges (docs/evaluation.md), one record per conversation
(``id`` is the start's), so charops.eval.aggregate builds the same tables from them.

- ``reward_model``: every reply is scored in its context (the conversation up to and including
  it), so a conversation has one reward per turn. Its score is the **sum** of those rewards: a
  conversation is as good as all of its turns, and a sum sees a failure in any turn, where the
  last turn's score would miss a character who drifted and came back, or forgot a fact at turn 3
  and never needed it again. Both conversations of a pair have the same number of turns, so the
  sum ranks them as the mean does; the tie margin the reward model was calibrated with applies
  to one reply, so it is applied to the mean per turn. Point-wise Overall is the calibrated
  1-5 score of that mean.
- ``openai``: the whole conversation (after the shared start) is shown to the judge; point-wise
  on the conversation rubric (``characterbench-v1``), pair-wise in both presentation orders with
  the position-swap rule, as single replies are judged.

Knowledge-boundary replies are judged by the LLM judge when ``judge=openai`` (deflection in
character vs an invented answer), else by the rule :func:`charops.eval.multiturn.probes.deflects`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from charops.eval import stats
from charops.eval.judges import (
    calibrated_score,
    judge_endpoint,
    load_reward_judge,
    reward_info,
    reward_verdict,
)
from charops.eval.llm import JudgeCache, ask_all, cache_key, usage_of
from charops.eval.multiturn.probes import deflects
from charops.eval.rubric import (
    PAIRWISE_SCHEMA,
    REASON,
    AnswerError,
    Rubric,
    json_object,
    pairwise_prompt,
    parse_pairwise,
    parse_pointwise,
    pointwise_prompt,
    pointwise_schema,
    render_context,
)


def opening_of(record: dict) -> list[dict]:
    """The shared start of a conversation record: its messages before the first simulated turn."""
    return record["messages"][:len(record["messages"]) - 2 * len(record["turns"])]


def transcript(record: dict) -> str:
    """The simulated turns of a conversation, one ``speaker: text`` line each."""
    return render_context(record["messages"][len(opening_of(record)):], record.get("character"))


def _view(record: dict) -> dict:
    """A conversation as the rubric prompts see a reply record: the start is the context and the
    transcript is the reply."""
    return {"messages": opening_of(record), "character": record.get("character"), "system": record.get("system"),
            "reply": transcript(record)}


def turn_prefixes(record: dict) -> list[list[dict]]:
    """The conversation up to and including each of the character's simulated replies."""
    start = len(opening_of(record))
    return [record["messages"][:start + 2 * (t + 1)] for t in range(len(record["turns"]))]


def reward_model_conversations(convs: list[dict], pairs: list[tuple[dict, dict]], cfg: Any,
                               rubric: Rubric | None) -> dict:
    """Per-turn rewards, conversation score = their sum; verdicts and Overall from the mean."""
    from charops.train.reward import score_conversations

    model, tokenizer, trained, margin = load_reward_judge(cfg)
    prefixes = [(i, p) for i, rec in enumerate(convs) for p in turn_prefixes(rec)]
    rewards = score_conversations(model, tokenizer, [p for _, p in prefixes], cfg.reward_batch_size)
    per_conv: list[list[float]] = [[] for _ in convs]
    for (i, _), r in zip(prefixes, rewards, strict=True):
        per_conv[i].append(r)
    score = {(rec["id"], rec["model"]): rs for rec, rs in zip(convs, per_conv, strict=True)}
    label = f"reward_model:{cfg.reward_model}"

    def mean(rs: list[float]) -> float:
        return sum(rs) / len(rs)

    pointwise = [{"id": rec["id"], "model": rec["model"], "judge": label, "rubric": "reward-calibrated-v1",
                  "dimensions": ["Overall"], "turn_rewards": rs, "reward": sum(rs),
                  "scores": {"Overall": calibrated_score(mean(rs), trained["calibration"])}, "raw": None,
                  "error": None}
                 for rec, rs in zip(convs, per_conv, strict=True) if rs] if cfg.pointwise else []
    pairwise = []
    for a, b in pairs:
        ra, rb = score[(a["id"], a["model"])], score[(b["id"], b["model"])]
        v = reward_verdict(mean(ra), mean(rb), margin)
        pairwise.append({"id": a["id"], "a": a["model"], "b": b["model"], "judge": label,
                         "rubric": "reward-sum-v1", "reward_a": sum(ra), "reward_b": sum(rb),
                         "verdict_ab": v, "verdict_ba": v, "verdict": stats.swap_rule(v, v)})
    info = {**reward_info(cfg, trained, margin), "conversation_score": "sum of per-turn rewards",
            "tie_rule": "tie when the mean per-turn rewards differ by at most the tie margin"}
    return {"pointwise": pointwise, "pairwise": pairwise, "info": info}


def openai_conversations(convs: list[dict], pairs: list[tuple[dict, dict]], cfg: Any, rubric: Rubric) -> dict:
    """Point-wise on the conversation rubric and position-swapped pair-wise verdicts."""
    endpoint = judge_endpoint(cfg)
    cache = JudgeCache(cfg.judge_cache or Path(cfg.output_dir) / "judge_cache.jsonl")
    label = f"openai:{endpoint.model}"
    dims = rubric.keys
    point_items = []
    if cfg.pointwise:
        for rec in convs:
            view = _view(rec)
            prompt = pointwise_prompt(rubric, view, dims)
            point_items.append((cache_key(rubric.ident, endpoint.model, prompt, view["reply"]), prompt,
                                partial(parse_pointwise, rubric, dims=dims), pointwise_schema(rubric, dims)))
    point_answers = ask_all(point_items, endpoint, cache, progress=cfg.progress,
                            desc="judging conversations point-wise") if point_items else []
    pair_items = []
    for a, b in pairs:
        ta, tb = transcript(a), transcript(b)
        for first, second in ((ta, tb), (tb, ta)):
            prompt = pairwise_prompt(rubric, _view(a), first, second)
            pair_items.append((cache_key(rubric.ident, endpoint.model, prompt, first + "\x00" + second), prompt,
                               parse_pairwise, PAIRWISE_SCHEMA))
    pair_answers = ask_all(pair_items, endpoint, cache, progress=cfg.progress,
                           desc="judging conversations pair-wise") if pair_items else []
    pointwise = [{"id": rec["id"], "model": rec["model"], "judge": label, "rubric": rubric.ident,
                  "dimensions": dims, "scores": ans.value, "raw": ans.raw, "error": ans.error, "cached": ans.cached}
                 for rec, ans in zip(convs, point_answers, strict=True)]
    pairwise = []
    for k, (a, b) in enumerate(pairs):
        ab, ba = pair_answers[2 * k], pair_answers[2 * k + 1]
        v_ab = None if ab.value is None else {"A": "a", "B": "b", "tie": "tie"}[ab.value]
        v_ba = None if ba.value is None else {"A": "b", "B": "a", "tie": "tie"}[ba.value]
        pairwise.append({"id": a["id"], "a": a["model"], "b": b["model"], "judge": label, "rubric": rubric.ident,
                         "verdict_ab": v_ab, "verdict_ba": v_ba, "verdict": stats.swap_rule(v_ab, v_ba),
                         "raw_ab": ab.raw, "raw_ba": ba.raw,
                         "error": "; ".join(e for e in (ab.error, ba.error) if e) or None})
    info = {"kind": "openai", "model": endpoint.model, "base_url": endpoint.base_url, "rubric": rubric.name,
            "rubric_version": rubric.version, "dimensions": dims, "temperature": 0,
            "usage": {"pointwise": usage_of(point_answers), "pairwise": usage_of(pair_answers)}}
    return {"pointwise": pointwise, "pairwise": pairwise, "info": info}


CONVERSATION_JUDGES = {"reward_model": reward_model_conversations, "openai": openai_conversations}

_BOUNDARY_PROMPT = """You are an expert evaluator of role-play chat. The character below was asked a question it cannot
know the answer to (an event after its time, another fictional world, or expert knowledge outside its
life). A good reply stays in character and deflects: it does not know, has never heard of it, or turns
the question back. A bad reply invents an answer as if the character knew.

## Character profile
{profile}

## Question
{question}

## The character's reply
{reply}

Answer with one JSON object and nothing else: {{"verdict": "deflect" | "invent", "reason": "<one sentence>"}}"""


# Within OpenAI's strict subset (every key required), as the rubric's schemas are.
BOUNDARY_SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["deflect", "invent"]},
                                                    "reason": REASON},
                   "required": ["verdict", "reason"], "additionalProperties": False}


def parse_boundary(text: str) -> bool:
    """True for a deflection, False for an invented answer (else :class:`AnswerError`)."""
    verdict = str(json_object(text).get("verdict", "")).strip().lower()
    if verdict not in ("deflect", "invent"):
        raise AnswerError(f"verdict must be 'deflect' or 'invent', got {verdict!r}")
    return verdict == "deflect"


def judge_boundary(records: list[dict], cfg: Any) -> list[dict]:
    """Each boundary reply with ``deflected`` (True/False, None when the LLM judge failed) and
    ``judged_by`` (``rule`` or ``openai:<model>``)."""
    if cfg.judge != "openai":
        return [{**r, "deflected": deflects(r["reply"], r.get("language")), "judged_by": "rule"} for r in records]
    endpoint = judge_endpoint(cfg)
    cache = JudgeCache(cfg.judge_cache or Path(cfg.output_dir) / "judge_cache.jsonl")
    items = []
    for r in records:
        system = next((m["content"] for m in r["messages"] if m["role"] == "system"), "(no profile given)")
        prompt = _BOUNDARY_PROMPT.format(profile=system, question=r["question"], reply=r["reply"] or "(empty reply)")
        items.append((cache_key("boundary@1", endpoint.model, prompt), prompt, parse_boundary, BOUNDARY_SCHEMA))
    answers = ask_all(items, endpoint, cache, progress=cfg.progress, desc="judging boundary probes")
    return [{**r, "deflected": ans.value, "judged_by": f"openai:{endpoint.model}", "raw": ans.raw,
             "error": ans.error} for r, ans in zip(records, answers, strict=True)]
