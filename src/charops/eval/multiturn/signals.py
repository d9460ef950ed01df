"""Automatic signals of whole conversations (no judge needed), per model.

    from charops.eval.multiturn.signals import conversation_signals
    block = conversation_signals(records)   # one model's conversation records

Units are those of charops.eval.signals (a CJK character, or a lower-cased Latin word).

- ``cross_turn_repetition``: for each reply after the first, the share of its unit trigrams that
  already occurred in the *earlier replies of the same conversation*; averaged over those replies
  (0-1; a character who says the same thing every turn tends to 1). Within-reply loops are the
  single-turn ``repetition_rate``'s business; this one sees a model repeating itself across turns.
- ``role_break_rate`` and ``role_break_by_turn``: the share of replies that step out of the role
  (charops.eval.signals.breaks_role), overall and at each turn index (drift out of character
  shows as a rising list).
- ``length_slope``: the least-squares slope of reply length (characters) against the turn index,
  averaged over conversations (characters per turn; 0 is steady, negative means replies shrink);
  ``length_by_turn``: mean reply length at each turn index.
- ``memory_recall``: recalled / asked memory probes (charops.eval.multiturn.probes).
"""

from __future__ import annotations

from charops.eval.signals import breaks_role, ngrams, units


def cross_turn_repetition(replies: list[str], n: int = 3) -> float | None:
    """Mean share of each later reply's n-grams seen in the earlier replies (None: nothing to compare)."""
    seen: set[tuple[str, ...]] = set()
    shares = []
    for i, reply in enumerate(replies):
        grams = ngrams(units(reply), n)
        if i and grams:
            shares.append(sum(g in seen for g in grams) / len(grams))
        seen.update(grams)
    return sum(shares) / len(shares) if shares else None


def slope(values: list[float]) -> float | None:
    """Least-squares slope of ``values`` against 0, 1, 2, ... (None for fewer than two values)."""
    n = len(values)
    if n < 2:
        return None
    mx, my = (n - 1) / 2, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in range(n))
    return sum((x - mx) * (y - my) for x, y in enumerate(values)) / sxx


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def conversation_signals(records: list[dict]) -> dict:
    """The signals above over one model's conversation records."""
    turns = max((len(r["turns"]) for r in records), default=0)
    replies = [[t["reply"] for t in r["turns"]] for r in records]
    breaks_by_turn = []
    length_by_turn = []
    for k in range(turns):
        at_k = [rs[k] for rs in replies if len(rs) > k]
        breaks_by_turn.append(sum(breaks_role(x) for x in at_k) / len(at_k))
        length_by_turn.append(sum(len(x.strip()) for x in at_k) / len(at_k))
    every = [x for rs in replies for x in rs]
    asked = [r["memory"]["recalled"] for r in records if r.get("memory") and r["memory"]["recalled"] is not None]
    return {"conversations": len(records), "turns": turns,
            "cross_turn_repetition": _mean([cross_turn_repetition(rs) for rs in replies]),
            "role_break_rate": sum(breaks_role(x) for x in every) / len(every) if every else None,
            "role_break_by_turn": breaks_by_turn,
            "length_slope": _mean([slope([len(x.strip()) for x in rs]) for rs in replies]),
            "length_by_turn": length_by_turn,
            "memory_recall": sum(asked) / len(asked) if asked else None, "memory_probes": len(asked)}
