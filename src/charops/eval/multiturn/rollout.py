"""Rollouts: each model converses with the simulated user for ``turns`` turns from the same starts.

    from charops.eval.multiturn.rollout import boundary_starts, probe_replies, rollout
    convs = rollout(loaded, "candidate", starts, ScriptedUser(), turns=6, settings=GenerationSettings(),
                    memory=(1, 3))        # state a fact in turn 2, ask it back in turn 5 (0-based 1 and 4)
    probes = probe_replies(loaded, "candidate", boundary_starts(starts, seed=0), settings)

Every conversation advances one turn at a time, all conversations of a model together: the user
speaks (charops.eval.multiturn.users), then the model replies to all conversations through
single-turn evaluation's own generation (charops.eval.generate.generate_replies: batched by
character, left-padded, the shared profile prefix computed once). A
context longer than the window drops its oldest turns after the system prompt, as single-turn
evaluation does, and the record counts them (a model that forgets because the window dropped
the fact is told apart from one that forgets in context).

With ``memory=(k, m)``, turn k's user message gets the probe's statement appended and turn k+m's
is replaced by the question; both turns are marked in the record (``probe``), and the reply to the
question is checked for recall.

Records (``conversations.jsonl``, one per model and start, written before any judging)::

    {"id", "model", "model_ref", "character", "category", "topic", "language", "system",
     "messages": [... the whole conversation, system prompt and greeting included ...],
     "turns": [{"user", "user_source", ["user_error"], "reply", "probe", "dropped_turns", "new_tokens",
                "stopped"}],
     "memory": {"thing", "answer", "stated_turn", "asked_turn", "recalled"} | null, "settings": {...}}
"""

from __future__ import annotations

import random

from charops.errors import DataError
from charops.eval.generate import GenerationSettings, generate_replies
from charops.eval.multiturn.probes import boundary_questions, memory_fact, recalled


def _replies(loaded, label: str, conversations: list[list[dict]], settings: GenerationSettings) -> list[dict]:
    """The model's reply to each conversation so far: single-turn generation's own batching,
    context fitting and shared-prefix reuse (charops.eval.generate.generate_replies), in order."""
    prompts = [{"id": str(i), "messages": msgs} for i, msgs in enumerate(conversations)]
    return generate_replies(loaded, label, prompts, settings)[0]


def plan_memory(starts: list[dict], seed: int) -> list[dict]:
    """The fact each start's user states (seeded per start id, the same for every model)."""
    return [memory_fact(s["language"], random.Random(f"{seed}:{s['id']}:memory")) for s in starts]


def rollout(loaded, label: str, starts: list[dict], user, turns: int, settings: GenerationSettings,
            memory: tuple[int, int] | None = None, seed: int = 0) -> list[dict]:
    """One conversation record per start (see the module doc) for the model ``loaded``."""
    if turns < 1:
        raise DataError(f"eval mode=multiturn: turns must be at least 1, got {turns}")
    if memory is not None and memory[0] + memory[1] >= turns:
        raise DataError(f"eval mode=multiturn: the memory probe asks in turn {memory[0] + memory[1] + 1} of "
                        f"{turns}; lower memory_gap or raise turns")
    facts = plan_memory(starts, seed) if memory else [None] * len(starts)
    conversations = [[dict(m) for m in s["opening"]] for s in starts]
    records = [{"id": s["id"], "model": label, "model_ref": str(loaded[0]), "character": s["character"],
                "category": s["category"], "topic": s["topic"], "language": s["language"],
                "system": next((m["content"] for m in s["opening"] if m["role"] == "system"), None),
                "turns": [], "settings": settings.recorded(),
                "memory": ({"thing": f["thing"], "answer": f["answer"], "stated_turn": memory[0] + 1,
                            "asked_turn": memory[0] + memory[1] + 1, "recalled": None} if f else None)}
               for s, f in zip(starts, facts, strict=True)]
    for t in range(turns):
        said = user.next_turns(starts, conversations, t)
        probes = []
        for i, (text, _, _) in enumerate(said):
            probe = None
            if facts[i] is not None and t == memory[0]:
                text, probe = f"{text} {facts[i]['statement']}", "memory_statement"
            elif facts[i] is not None and t == memory[0] + memory[1]:
                text, probe = facts[i]["question"], "memory_question"
            conversations[i].append({"role": "user", "content": text})
            probes.append(probe)
        answers = _replies(loaded, label, conversations, settings)
        for i, ans in enumerate(answers):
            conversations[i].append({"role": "assistant", "content": ans["reply"]})
            records[i]["turns"].append({"user": conversations[i][-2]["content"], "user_source": said[i][1],
                                        **({"user_error": said[i][2]} if said[i][2] else {}),
                                        "reply": ans["reply"], "probe": probes[i], **{k: ans[k] for k in (
                                            "dropped_turns", "new_tokens", "stopped")}})
            if probes[i] == "memory_question":
                records[i]["memory"]["recalled"] = recalled(ans["reply"], facts[i])
    for rec, msgs in zip(records, conversations, strict=True):
        rec["messages"] = msgs
    return records


def boundary_starts(starts: list[dict], seed: int, ask=None) -> list[dict]:
    """One knowledge-boundary probe per kind and character: the character's opening (profile and
    greeting), then the question (``id`` ``boundary-<character>-<kind>``). Questions come from
    the templates; with ``ask`` (an LLM: ``ask(profile, system) -> {kind: question} | None``)
    the LLM's questions are used where it answered, and ``source`` says which."""
    seen: dict[str, dict] = {}
    for s in starts:
        seen.setdefault(s["character"] or "", s)
    probes = []
    for name, s in sorted(seen.items()):
        profile = s["profile"] or {"language": s["language"], "name": name}
        system = next((m["content"] for m in s["opening"] if m["role"] == "system"), "")
        written = ask(profile, system) if ask else None
        for q in boundary_questions(profile, random.Random(f"{seed}:{name}:boundary")):
            if written:
                q = {**q, "question": written[q["kind"]], "source": "llm"}
            probes.append({"id": f"boundary-{name}-{q['kind']}", "character": s["character"],
                           "category": s["category"], "language": s["language"], "kind": q["kind"],
                           "question": q["question"], "source": q["source"], "opening": s["opening"]})
    return probes


def probe_replies(loaded, label: str, probes: list[dict], settings: GenerationSettings) -> list[dict]:
    """Each model's reply to each knowledge-boundary question (judged later)."""
    convs = [[*p["opening"], {"role": "user", "content": p["question"]}] for p in probes]
    return [{**{k: p[k] for k in ("id", "character", "category", "language", "kind", "question", "source")},
             "model": label, "messages": convs[i], "reply": ans["reply"]}
            for i, (p, ans) in enumerate(zip(probes, _replies(loaded, label, convs, settings), strict=True))]
