"""Automatic signals of generated replies (no judge needed), overall and per category and topic.

    from charops.eval.signals import reply_signals
    block = reply_signals(replies)    # replies of one model: {"distinct_1", ..., "by_category", "by_topic"}

Text is split into *units*: each CJK character is one unit, each run of Latin letters/digits one
(lower-cased) word; punctuation and stage-direction brackets are not units.

- ``distinct_1`` / ``distinct_2``: distinct unigrams (bigrams) over all unigrams (bigrams) of all
  replies together (Li et al. 2016, corpus level), 0-1;
- ``mean_reply_chars``: mean length in characters (after stripping);
- ``repetition_rate``: per non-empty reply, the share of its unit trigrams that already occurred
  earlier in the same reply (a looping reply tends to 1), averaged over replies, 0-1;
- ``empty_rate``: share of replies that are empty after stripping, 0-1;
- ``profile_consistency`` (charops' own): share of replies that (a) are not empty, (b) do not
  step out of the role as an AI, assistant or language model (a fixed zh/en pattern list), and
  (c) are closer to their own character's profile than to any other character's of the
  evaluation (cosine of unit-bigram TF-IDF vectors between the reply and each character's
  system prompt; with one character, (c) holds trivially). It asks: "could a reader tell from
  the reply who is speaking, and does it stay in the role?" It is lexical, so it rewards
  reusing the profile's words and cannot see paraphrase; read it beside the judged Consistency.
  ``role_break_rate`` and ``profile_match_rate`` report (b) and (c) alone.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

_UNIT = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[A-Za-z0-9']+")
_ROLE_BREAK = re.compile(
    r"as an ai\b|an ai (?:language )?model|i am an ai\b|i'm an ai\b|language model|ai assistant|"
    r"as a virtual assistant|i (?:do not|don't) have (?:personal )?(?:feelings|experiences|a body)|"
    r"人工智能|ai助手|语言模型|智能助手|我是一个ai|我是ai|作为一个ai|作为ai|虚拟助手|聊天机器人",
    re.IGNORECASE)


def units(text: str) -> list[str]:
    return [u.lower() for u in _UNIT.findall(text or "")]


def ngrams(seq: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct(replies: list[str], n: int) -> float | None:
    grams = [g for r in replies for g in ngrams(units(r), n)]
    return len(set(grams)) / len(grams) if grams else None


def repetition(reply: str, n: int = 3) -> float | None:
    grams = ngrams(units(reply), n)
    if not grams:
        return None
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for g in grams:
        repeated += g in seen
        seen.add(g)
    return repeated / len(grams)


def breaks_role(reply: str) -> bool:
    return bool(_ROLE_BREAK.search(reply or ""))


class _ProfileIndex:
    """TF-IDF vectors (unit bigrams, plus unigrams for short texts) of each character's profile."""

    def __init__(self, profiles: dict[str, str]):
        self.names = sorted(profiles)
        docs = {name: self._terms(profiles[name]) for name in self.names}
        df = Counter(t for terms in docs.values() for t in set(terms))
        n = len(self.names)
        self.idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
        self.vectors = {name: self._vector(terms) for name, terms in docs.items()}

    @staticmethod
    def _terms(text: str) -> list[tuple[str, ...]]:
        u = units(text)
        return ngrams(u, 2) + ngrams(u, 1)

    def _vector(self, terms: list) -> dict:
        tf = Counter(terms)
        vec = {t: c * self.idf.get(t, 0.0) for t, c in tf.items()}
        norm = math.sqrt(sum(v * v for v in vec.values()))
        return {t: v / norm for t, v in vec.items()} if norm else {}

    def nearest_is(self, reply: str, character: str) -> bool:
        if len(self.names) < 2:
            return True
        vec = self._vector(self._terms(reply))
        sims = {name: sum(w * self.vectors[name].get(t, 0.0) for t, w in vec.items()) for name in self.names}
        best = max(sims.values())
        return best > 0 and sims.get(character, 0.0) == best


def _block(replies: list[dict], index: _ProfileIndex) -> dict:
    texts = [r.get("reply") or "" for r in replies]
    n = len(texts)
    if n == 0:
        return {k: None for k in ("distinct_1", "distinct_2", "mean_reply_chars", "repetition_rate",
                                  "empty_rate", "profile_consistency", "role_break_rate", "profile_match_rate")} | {"n": 0}
    reps = [x for x in (repetition(t) for t in texts if t.strip()) if x is not None]
    empty = [not t.strip() for t in texts]
    broke = [breaks_role(t) for t in texts]
    match = [index.nearest_is(t, r.get("character") or "") for t, r in zip(texts, replies, strict=True)]
    consistent = [not e and not b and m for e, b, m in zip(empty, broke, match, strict=True)]
    return {"distinct_1": distinct(texts, 1), "distinct_2": distinct(texts, 2),
            "mean_reply_chars": sum(len(t.strip()) for t in texts) / n,
            "repetition_rate": sum(reps) / len(reps) if reps else None,
            "empty_rate": sum(empty) / n, "profile_consistency": sum(consistent) / n,
            "role_break_rate": sum(broke) / n, "profile_match_rate": sum(match) / n, "n": n}


def profiles_of(replies: list[dict]) -> dict[str, str]:
    """Each character's profile text: the system prompts its replies were generated under."""
    texts: dict[str, list[str]] = defaultdict(list)
    for r in replies:
        system = r.get("system") or ""
        if r.get("character") and system and system not in texts[r["character"]]:
            texts[r["character"]].append(system)
    return {name: "\n".join(parts) for name, parts in texts.items()}


def reply_signals(replies: list[dict], profiles: dict[str, str] | None = None) -> dict:
    """The signals of one model's replies, overall plus ``by_category`` and ``by_topic``.

    ``profiles`` (character -> profile text) default to the replies' own system prompts; pass
    the same profiles for every model so their numbers compare.
    """
    index = _ProfileIndex(profiles if profiles is not None else profiles_of(replies))
    out = _block(replies, index)
    for key in ("category", "topic"):
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in replies:
            groups[r.get(key) or "other"].append(r)
        out[f"by_{key}"] = {name: _block(rs, index) for name, rs in sorted(groups.items())}
    return out
