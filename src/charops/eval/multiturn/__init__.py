"""Multi-turn evaluation: simulated users, whole-conversation judging, memory and boundary probes.

    charops eval run mode=multiturn turns=6                          # scripted user, reward-model judge
    charops eval run mode=multiturn turns=6 user_simulator=openai user_base_url=http://127.0.0.1:8080/openai/v1 \\
        user_model=charops-chat judge=openai judge_model=...          # an LLM user and an LLM judge
    charops eval run mode=both                                       # single replies and conversations

    from charops.eval.multiturn import evaluate_conversations
    block = evaluate_conversations(cfg, dataset, [("candidate", "runs/dpo/model"), ("baseline", "runs/base")])

CharacterGLM's protocol judges one reply to one context; users meet a character over dozens of
turns, and the failures that drive them away are multi-turn (forgetting, contradicting, drifting
out of character, answering what the character cannot know). The steps, each writing into
``output_dir``:

1. **starts** (:mod:`.users`): held-out dialogues of the prepared dataset give each conversation
   its profile, greeting and script, the same for every model;
2. **rollouts** (:mod:`.rollout`): each model converses with the user simulator (``scripted``
   replays held-out user turns; ``openai`` is an LLM with a persona and a goal) for ``turns``
   turns, with the memory probe planted; plus one knowledge-boundary question per kind and
   character -> ``conversations.jsonl`` and ``boundary_replies.jsonl``, written before judging;
3. **judging** (:mod:`.judging`): whole conversations point-wise (``characterbench-v1`` with an
   LLM judge; calibrated Overall with the reward model) and pair-wise in both orders against
   every other model -> ``conversation_pointwise.jsonl``, ``conversation_pairwise.jsonl``;
   boundary replies by the LLM judge or the rule -> ``boundary.jsonl``;
4. **summary**: the same tables as single-turn evaluation (win/tie/lose and Advantage per
   category and topic, with the sign test and bootstrap interval; point-wise means with
   intervals), plus automatic conversation signals (:mod:`.signals`), memory recall and the
   boundary score per category -> the ``multiturn`` block of ``eval_summary.json``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from charops.errors import DataError
from charops.eval import stats
from charops.eval.aggregate import pairwise_block, pointwise_block, slices_of
from charops.io import read_jsonl, write_jsonl

FILES = ("conversations.jsonl", "boundary_replies.jsonl", "conversation_pointwise.jsonl",
         "conversation_pairwise.jsonl", "boundary.jsonl")


def user_endpoint(cfg: Any, max_tokens: int = 96):
    """The LLM that plays the user (and writes boundary questions): ``user_base_url`` /
    ``user_model``, else the judge's endpoint."""
    from charops.eval.llm import Endpoint

    return Endpoint.from_env(base_url=cfg.user_base_url or cfg.judge_base_url,
                             model=cfg.user_model or cfg.judge_model, timeout_s=cfg.judge_timeout_s,
                             max_retries=cfg.judge_max_retries, backoff_s=cfg.judge_backoff_s,
                             concurrency=cfg.judge_concurrency, rate_limit=cfg.judge_rate_limit, max_tokens=max_tokens)


def make_user(cfg: Any, cache):
    """The user simulator the config names (``scripted`` or ``openai``, answers cached in ``cache``)."""
    from charops.eval.multiturn.users import LLMUser, ScriptedUser

    if cfg.user_simulator == "scripted":
        return ScriptedUser()
    return LLMUser(user_endpoint(cfg), cache, progress=cfg.progress)


def question_writer(cfg: Any, cache):
    """With an LLM configured (the user simulator or the judge), a function asking it for one
    boundary question per kind (answers cached in ``cache``); None on the scripted path
    (templates only)."""
    if cfg.user_simulator != "openai" and cfg.judge != "openai":
        return None
    from charops.eval.llm import ask_all, cache_key
    from charops.eval.multiturn.probes import (
        QUESTIONS_SCHEMA,
        llm_boundary_prompt,
        parse_boundary_questions,
    )

    endpoint = user_endpoint(cfg, max_tokens=256)

    def ask(profile: dict, system: str) -> dict | None:
        prompt = llm_boundary_prompt(profile, system)
        [answer] = ask_all([(cache_key("boundary-questions@1", endpoint.model, prompt), prompt,
                             parse_boundary_questions, QUESTIONS_SCHEMA)], endpoint, cache)
        return answer.value  # None when the LLM failed: the templates stand
    return ask


def _memory_plan(cfg: Any) -> tuple[int, int] | None:
    if not cfg.memory_probe:
        return None
    return (cfg.memory_turn - 1, cfg.memory_gap)


def rollouts(cfg: Any, dataset: Path, models: list[tuple[str, str]], settings) -> tuple[list[dict], list[dict], dict]:
    """Generate (or, with ``reuse_replies``, read back) every model's conversations and boundary
    replies; written to ``output_dir`` before any judging. Returns (conversations, boundary
    replies, the user simulator's description)."""
    from charops.eval.generate import load_model
    from charops.eval.llm import JudgeCache
    from charops.eval.multiturn.rollout import boundary_starts, probe_replies, rollout
    from charops.eval.multiturn.users import load_starts

    out = Path(cfg.output_dir)
    conv_path, probe_path = out / "conversations.jsonl", out / "boundary_replies.jsonl"
    if cfg.reuse_replies:
        if not conv_path.is_file():
            raise DataError(f"reuse_replies: {conv_path} does not exist; run mode=multiturn once without it")
        probes = list(read_jsonl(probe_path)) if probe_path.is_file() else []
        return list(read_jsonl(conv_path)), probes, {"kind": "reused", "note": f"read back from {conv_path}"}
    starts = load_starts(dataset, cfg.max_conversations, cfg.seed)
    cache = JudgeCache(out / "user_cache.jsonl")  # the simulator's turns and the LLM's boundary questions
    user = make_user(cfg, cache)
    probe_plan = boundary_starts(starts, cfg.seed, question_writer(cfg, cache)) if cfg.boundary_probes else []
    convs: list[dict] = []
    probes: list[dict] = []
    for label, ref in models:
        loaded = load_model(ref, cfg.dtype)
        convs.extend(rollout(loaded, label, starts, user, cfg.turns, settings, memory=_memory_plan(cfg),
                             seed=cfg.seed))
        if probe_plan:
            probes.extend(probe_replies(loaded, label, probe_plan, settings))
        del loaded
    write_jsonl(conv_path, convs)
    write_jsonl(probe_path, probes)
    return convs, probes, user.describe()


def _rate_block(records: list[dict], flag: str) -> dict:
    """``{"n", "yes", "rate", "by_category": {...}}`` of a boolean field (None: not judged)."""
    def block(rs: list[dict]) -> dict:
        judged = [r[flag] for r in rs if r[flag] is not None]
        return {"n": len(judged), "yes": sum(judged), "rate": sum(judged) / len(judged) if judged else None}

    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r.get("category") or "other"].append(r)
    return {**block(records), "by_category": {k: block(v) for k, v in sorted(groups.items())}}


def memory_block(convs: list[dict]) -> dict:
    """Memory-probe recall of one model's conversations, overall and per category."""
    probed = [{"category": c["category"], "recalled": c["memory"]["recalled"]} for c in convs if c.get("memory")]
    return _rate_block(probed, "recalled")


def boundary_block(records: list[dict]) -> dict:
    """Boundary score (share of deflections) of one model, overall, per category and per kind."""
    block = _rate_block(records, "deflected")
    kinds: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        kinds[r["kind"]].append(r)
    block["by_kind"] = {k: _rate_block(v, "deflected") for k, v in sorted(kinds.items())}
    for v in block["by_kind"].values():
        v.pop("by_category")
    block["judged_by"] = sorted({r["judged_by"] for r in records})
    return block


def evaluate_conversations(cfg: Any, dataset: Path, models: list[tuple[str, str]], settings=None) -> dict:
    """Run steps 1-4 of the module doc for ``models`` (candidate first); the ``multiturn`` block."""
    from charops.eval.generate import GenerationSettings
    from charops.eval.multiturn.judging import CONVERSATION_JUDGES, judge_boundary
    from charops.eval.multiturn.signals import conversation_signals
    from charops.eval.rubric import load_rubric

    settings = settings or GenerationSettings(
        seed=cfg.seed, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
        repetition_penalty=cfg.repetition_penalty, batch_size=cfg.batch_size,
        max_context_tokens=cfg.max_context_tokens)
    out = Path(cfg.output_dir)
    convs, probes, user = rollouts(cfg, dataset, models, settings)
    labels = [label for label, _ in models]
    candidate = labels[0]
    skipped: list[str] = []
    by_key = {(c["id"], c["model"]): c for c in convs}
    pairs = [(c, by_key[(c["id"], other)]) for other in labels[1:] for c in convs
             if c["model"] == candidate and (c["id"], other) in by_key]
    if cfg.judge == "none":
        result = {"pointwise": [], "pairwise": [], "info": {"kind": "none"}}
        skipped.append("conversation judging: no judge configured (judge=none)")
    else:
        rubric = load_rubric(cfg.conversation_rubric) if cfg.judge == "openai" else None
        result = CONVERSATION_JUDGES[cfg.judge](convs, pairs, cfg, rubric)
    boundary = judge_boundary(probes, cfg) if probes else []
    if not probes:
        skipped.append("knowledge-boundary probes: boundary_probes=false")
    write_jsonl(out / "conversation_pointwise.jsonl", result["pointwise"])
    write_jsonl(out / "conversation_pairwise.jsonl", result["pairwise"])
    write_jsonl(out / "boundary.jsonl", boundary)

    where = slices_of(convs)
    dims = result["info"].get("dimensions") or []
    point = None
    if result["pointwise"]:
        point = {"dimensions": dims}
        for label in labels:
            recs = [r for r in result["pointwise"] if r["model"] == label]
            point[label] = pointwise_block(recs, dims, where) if recs else None
    pair = {other: pairwise_block(result["pairwise"], candidate, other, where, cfg.bootstrap_resamples, cfg.seed)
            for other in labels[1:]} if result["pairwise"] else {}
    triples = [(r["a"], r["b"], r.get("verdict")) for r in result["pairwise"]]
    bt = stats.bradley_terry(triples, resamples=min(cfg.bootstrap_resamples, 500), seed=cfg.seed) \
        if len(labels) > 2 and triples else None
    return {"turns": cfg.turns, "user": user, "conversations": len({c["id"] for c in convs}),
            "models": labels, "judge": result["info"],
            "memory_probe": ({"stated_turn": cfg.memory_turn, "asked_turn": cfg.memory_turn + cfg.memory_gap}
                             if cfg.memory_probe else None),
            "pointwise": point,
            "pairwise": pair.get(labels[1]) if len(labels) > 1 else None,
            "pairwise_others": {k: v for k, v in pair.items() if k != labels[1]} or None,
            "bradley_terry": bt,
            "signals": {label: conversation_signals([c for c in convs if c["model"] == label]) for label in labels},
            "memory": ({label: memory_block([c for c in convs if c["model"] == label]) for label in labels}
                       if cfg.memory_probe else None),
            "boundary": ({label: boundary_block([b for b in boundary if b["model"] == label]) for label in labels}
                         if boundary else None),
            "skipped": skipped}
