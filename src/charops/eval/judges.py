"""Judges: one plain function per kind, chosen by the eval config's ``judge`` (``JUDGES[kind]``).

Each takes the reply records (``replies.jsonl`` rows), the prompt pairs to compare
(candidate reply, baseline reply) and the stage config, and returns
``{"pointwise": [records], "pairwise": [records], "info": {...}}`` in the shapes of
``pointwise.jsonl`` and ``pairwise.jsonl`` (docs/evaluation.md)::

    from charops.eval.judges import JUDGES
    result = JUDGES["openai"](replies, pairs, cfg, rubric)      # or "reward_model"

- ``openai``: an LLM behind any OpenAI-compatible endpoint (charops.eval.llm), point-wise on
  the rubric's dimensions (CharacterEval: each example on its own subset) and pair-wise in both
  presentation orders, combined by the position-swap rule;
- ``reward_model``: a reward model trained by ``charops train reward``; pair-wise verdicts from
  the difference of the two replies' rewards (tie within ``tie_margin``), and a point-wise
  Overall score from the calibration saved with the model (see :func:`calibrated_score`).

"none" has no function: the stage runs its automatic part and records why judging was skipped.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from charops.errors import ConfigError
from charops.eval import stats
from charops.eval.llm import Endpoint, JudgeCache, ask_all, cache_key, usage_of
from charops.eval.rubric import (
    PAIRWISE_SCHEMA,
    Rubric,
    pairwise_prompt,
    parse_pairwise,
    parse_pointwise,
    pointwise_prompt,
    pointwise_schema,
)


def load_subsets(path: str | None, rubric: Rubric) -> dict[str, list[str]]:
    """Per-example metric subsets: CharacterEval's ``id2metric.jsonl`` (one JSON object of
    ``{id: [[metric_en, metric_zh], ...]}``) or any ``{id: [metric, ...]}``; names are mapped to
    the rubric's keys through its aliases."""
    if not path:
        return {}
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"metric_subsets '{path}': not a readable JSON object ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"metric_subsets '{path}': expected a JSON object of id -> metrics")
    out: dict[str, list[str]] = {}
    for key, metrics in data.items():
        names = [m[0] if isinstance(m, list) else m for m in metrics]
        dims = []
        for name in names:
            dim = rubric.canonical(str(name))
            if dim is None:
                raise ConfigError(f"metric_subsets '{path}': id {key}: '{name}' is no metric of rubric "
                                  f"{rubric.name} ({', '.join(rubric.keys)})")
            if dim not in dims:
                dims.append(dim)
        out[str(key)] = [d for d in rubric.keys if d in dims]
    return out


def dims_for(record_id: str, rubric: Rubric, subsets: dict[str, list[str]]) -> list[str]:
    """The dimensions one example is scored on: its subset (matched by prompt id, or by the
    source id after the importer's ``<file>-`` prefix), else all of the rubric's."""
    if record_id in subsets:
        return subsets[record_id]
    tail = record_id.rsplit("-", 1)[-1]
    return subsets.get(tail) or rubric.keys


# ---------------------------------------------------------------------------------------------
# LLM judge


def judge_endpoint(cfg: Any) -> Endpoint:
    """The LLM judge's endpoint from the eval config's ``judge_*`` fields (else the environment)."""
    return Endpoint.from_env(
        base_url=cfg.judge_base_url, model=cfg.judge_model, timeout_s=cfg.judge_timeout_s,
        max_retries=cfg.judge_max_retries, backoff_s=cfg.judge_backoff_s, concurrency=cfg.judge_concurrency,
        rate_limit=cfg.judge_rate_limit, max_tokens=cfg.judge_max_tokens)


def openai_judge(replies: list[dict], pairs: list[tuple[dict, dict]], cfg: Any, rubric: Rubric) -> dict:
    """Point-wise scores of every reply and position-swapped verdicts of every pair."""
    endpoint = judge_endpoint(cfg)
    cache = JudgeCache(cfg.judge_cache or Path(cfg.output_dir) / "judge_cache.jsonl")
    subsets = load_subsets(cfg.metric_subsets, rubric)
    label = f"openai:{endpoint.model}"

    point_items, point_dims = [], []
    if cfg.pointwise:
        for rec in replies:
            dims = dims_for(rec["id"], rubric, subsets)
            prompt = pointwise_prompt(rubric, rec, dims)
            point_items.append((cache_key(rubric.ident, endpoint.model, prompt, rec["reply"]), prompt,
                                partial(parse_pointwise, rubric, dims=dims), pointwise_schema(rubric, dims)))
            point_dims.append(dims)
    point_answers = ask_all(point_items, endpoint, cache, progress=cfg.progress,
                            desc="judging point-wise") if point_items else []

    pair_items = []
    for cand, base in pairs:
        # ab: the candidate shown first; ba: the baseline shown first.
        for first, second in ((cand, base), (base, cand)):
            prompt = pairwise_prompt(rubric, cand, first["reply"], second["reply"])
            pair_items.append((cache_key(rubric.ident, endpoint.model, prompt,
                                         first["reply"] + "\x00" + second["reply"]), prompt, parse_pairwise,
                               PAIRWISE_SCHEMA))
    pair_answers = ask_all(pair_items, endpoint, cache, progress=cfg.progress,
                           desc="judging pair-wise") if pair_items else []

    pointwise = [{"id": rec["id"], "model": rec["model"], "judge": label, "rubric": rubric.ident,
                  "dimensions": dims, "scores": ans.value, "raw": ans.raw, "error": ans.error,
                  "cached": ans.cached}
                 for rec, dims, ans in zip(replies, point_dims, point_answers, strict=True)]
    pairwise = []
    for k, (cand, base) in enumerate(pairs):
        ab, ba = pair_answers[2 * k], pair_answers[2 * k + 1]
        # Map the shown position back to the model: in ba, position A is the baseline (model b).
        v_ab = None if ab.value is None else {"A": "a", "B": "b", "tie": "tie"}[ab.value]
        v_ba = None if ba.value is None else {"A": "b", "B": "a", "tie": "tie"}[ba.value]
        pairwise.append({"id": cand["id"], "a": cand["model"], "b": base["model"], "judge": label,
                         "rubric": rubric.ident, "verdict_ab": v_ab, "verdict_ba": v_ba,
                         "verdict": stats.swap_rule(v_ab, v_ba), "raw_ab": ab.raw, "raw_ba": ba.raw,
                         "error": "; ".join(e for e in (ab.error, ba.error) if e) or None})
    info = {"kind": "openai", "model": endpoint.model, "base_url": endpoint.base_url, "rubric": rubric.name,
            "rubric_version": rubric.version,
            "dimensions": rubric.keys, "temperature": 0,
            "usage": {"pointwise": usage_of(point_answers), "pairwise": usage_of(pair_answers)}}
    return {"pointwise": pointwise, "pairwise": pairwise, "info": info}


# ---------------------------------------------------------------------------------------------
# Reward-model judge


def calibrated_score(reward: float, calibration: dict, scale: tuple[int, int] = (1, 5)) -> int:
    """A reward as a 1-5 score: linear through (rejected mean, 2) and (chosen mean, 4) of the
    held-out pairs, rounded, clipped to the scale. A degenerate calibration (equal means) maps
    everything to 3."""
    lo, hi = scale
    c, r = calibration["chosen_mean"], calibration["rejected_mean"]
    if c == r:
        return 3
    value = 2.0 + 2.0 * (reward - r) / (c - r)
    return int(min(hi, max(lo, round(value))))


def reward_verdict(reward_a: float, reward_b: float, tie_margin: float) -> str:
    """``a``, ``b`` or ``tie`` from the reward difference (a tie within ``tie_margin``)."""
    diff = reward_a - reward_b
    if abs(diff) <= tie_margin:
        return "tie"
    return "a" if diff > 0 else "b"


def load_reward_judge(cfg: Any) -> tuple[Any, Any, dict, float]:
    """(model, tokenizer, the ``reward`` section of its training summary, tie margin) of the
    reward model named by ``cfg.reward_model`` (a ``charops train reward`` output)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from charops.model.load import inference_dtype, load_tokenizer, resolve_model

    if not cfg.reward_model:
        raise ConfigError("judge 'reward_model' needs reward_model=<model directory of `charops train reward`> "
                          "(or judge=openai / judge=none)")
    path = resolve_model(cfg.reward_model)
    summary_path = path / "training_summary.json"
    if not summary_path.is_file():
        raise ConfigError(f"judge 'reward_model': '{cfg.reward_model}' is not a reward model trained by "
                          "`charops train reward` (no training_summary.json); train one or set reward_model=...")
    trained = json.loads(summary_path.read_text(encoding="utf-8")).get("reward")
    if not trained:
        raise ConfigError(f"judge 'reward_model': {summary_path} has no 'reward' section; "
                          "it was not written by `charops train reward`")
    tokenizer = load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=inference_dtype(cfg.dtype))
    if torch.cuda.is_available():
        model.to("cuda")
    margin = cfg.tie_margin if cfg.tie_margin is not None else trained["tie_margin"]
    return model, tokenizer, trained, margin


def reward_info(cfg: Any, trained: dict, margin: float) -> dict:
    """The judge block of a reward-model judge: what it is and how far to trust it."""
    return {"kind": "reward_model", "model": str(cfg.reward_model), "rubric": "reward-calibrated-v1",
            "dimensions": ["Overall"], "pair_accuracy": trained["pair_accuracy"], "pairs": trained["pairs"],
            "scored_on": trained.get("scored_on"), "tie_margin": margin, "calibration": trained["calibration"],
            "pointwise_note": "Overall only: a reward model gives one number per reply, mapped to 1-5 by the calibration"}


def reward_model_judge(replies: list[dict], pairs: list[tuple[dict, dict]], cfg: Any, rubric: Rubric) -> dict:
    """Rewards of every reply (context + reply through the reward model); pair-wise verdicts from
    their difference, point-wise Overall from the calibration of ``charops train reward``."""
    from charops.train.reward import score_conversations

    model, tokenizer, trained, margin = load_reward_judge(cfg)
    rewards = score_conversations(model, tokenizer, [r["messages"] + [{"role": "assistant", "content": r["reply"]}]
                                                     for r in replies], cfg.reward_batch_size)
    score_of = {(r["id"], r["model"]): s for r, s in zip(replies, rewards, strict=True)}
    label = f"reward_model:{cfg.reward_model}"
    pointwise = []
    if cfg.pointwise:
        pointwise = [{"id": r["id"], "model": r["model"], "judge": label, "rubric": "reward-calibrated-v1",
                      "dimensions": ["Overall"], "reward": s,
                      "scores": {"Overall": calibrated_score(s, trained["calibration"])}, "raw": None, "error": None}
                     for r, s in zip(replies, rewards, strict=True)]
    pairwise = []
    for cand, base in pairs:
        ra, rb = score_of[(cand["id"], cand["model"])], score_of[(base["id"], base["model"])]
        # A reward model sees each reply alone, so the two presentation orders are the same
        # judgement; both are recorded so the records read like any judge's.
        v = reward_verdict(ra, rb, margin)
        pairwise.append({"id": cand["id"], "a": cand["model"], "b": base["model"], "judge": label,
                         "rubric": "reward-difference-v1", "reward_a": ra, "reward_b": rb,
                         "verdict_ab": v, "verdict_ba": v, "verdict": stats.swap_rule(v, v)})
    return {"pointwise": pointwise, "pairwise": pairwise, "info": reward_info(cfg, trained, margin)}


JUDGES = {"openai": openai_judge, "reward_model": reward_model_judge}
