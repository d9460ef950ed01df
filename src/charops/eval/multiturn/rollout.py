"""Rollouts: each model converses with the simulated user for ``turns`` turns from the same starts.

    from charops.eval.multiturn.rollout import rollout, probe_replies
    convs = rollout(loaded, "candidate", starts, ScriptedUser(), turns=6, settings=GenerationSettings(),
                    memory=(1, 3))        # state a fact in turn 2, ask it back in turn 5 (0-based 1 and 4)
    probes = probe_replies(loaded, "candidate", starts, settings, seed=0)

Every conversation advances one turn at a time, all conversations of a model together: the user
speaks (charops.eval.multiturn.users), then the model's replies to all conversations are one
left-padded batched ``generate`` per ``batch_size`` (charops.eval.generate.generate_batch). A
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

import torch

from charops.errors import DataError
from charops.eval.generate import GenerationSettings, fit_context, generate_batch, stop_ids
from charops.eval.multiturn.probes import boundary_questions, memory_fact, recalled


class _Replier:
    """Batched replies of one loaded model to lists of messages (context fitted to the window)."""

    def __init__(self, loaded, settings: GenerationSettings):
        from transformers import GenerationConfig

        self.path, self.model, self.tokenizer = loaded
        self.settings = settings
        window = getattr(self.model.config, "max_position_embeddings", None) or 2048
        if settings.max_context_tokens:
            window = min(window, settings.max_context_tokens)
        self.budget = window - settings.max_new_tokens
        if self.budget < 1:
            raise DataError(f"eval: max_new_tokens={settings.max_new_tokens} leaves no room for a prompt in "
                            f"the model's {window}-token window")
        self.stops = stop_ids(self.tokenizer, self.model)
        sample = settings.temperature > 0
        self.gen_cfg = GenerationConfig(
            max_new_tokens=settings.max_new_tokens, do_sample=sample,
            temperature=settings.temperature if sample else None, top_p=settings.top_p if sample else None,
            top_k=None, repetition_penalty=settings.repetition_penalty, eos_token_id=self.stops or None,
            pad_token_id=self.tokenizer.pad_token_id)

    def _encode(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]

    def replies(self, conversations: list[list[dict]]) -> list[dict]:
        """``{"reply", "dropped_turns", "new_tokens", "stopped"}`` for each conversation."""
        fitted = []
        for msgs in conversations:
            kept, dropped = fit_context(msgs, lambda m: len(self._encode(m)), self.budget)
            ids = self._encode(kept)
            fitted.append((ids[max(0, len(ids) - self.budget):], dropped))
        out: list[dict | None] = [None] * len(conversations)
        order = sorted(range(len(conversations)), key=lambda i: len(fitted[i][0]))
        size = max(1, self.settings.batch_size)
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            generated = generate_batch(self.model, [fitted[i][0] for i in batch], self.tokenizer.pad_token_id,
                                       self.gen_cfg)
            for i, gen in zip(batch, generated, strict=True):
                cut = next((k for k, t in enumerate(gen) if t in self.stops), None)
                gen = gen[:cut] if cut is not None else gen
                out[i] = {"reply": self.tokenizer.decode(gen, skip_special_tokens=True).strip(),
                          "dropped_turns": fitted[i][1], "new_tokens": len(gen),
                          "stopped": "end_of_turn" if cut is not None else "max_new_tokens"}
        return [o for o in out if o is not None]


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
    replier = _Replier(loaded, settings)
    facts = plan_memory(starts, seed) if memory else [None] * len(starts)
    conversations = [[dict(m) for m in s["opening"]] for s in starts]
    records = [{"id": s["id"], "model": label, "model_ref": str(replier.path), "character": s["character"],
                "category": s["category"], "topic": s["topic"], "language": s["language"],
                "system": next((m["content"] for m in s["opening"] if m["role"] == "system"), None),
                "turns": [], "settings": settings.recorded(),
                "memory": ({"thing": f["thing"], "answer": f["answer"], "stated_turn": memory[0] + 1,
                            "asked_turn": memory[0] + memory[1] + 1, "recalled": None} if f else None)}
               for s, f in zip(starts, facts, strict=True)]
    torch.manual_seed(settings.seed)
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
        answers = replier.replies(conversations)
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
    replier = _Replier(loaded, settings)
    convs = [[*p["opening"], {"role": "user", "content": p["question"]}] for p in probes]
    torch.manual_seed(settings.seed)
    return [{**{k: p[k] for k in ("id", "character", "category", "language", "kind", "question", "source")},
             "model": label, "messages": convs[i], "reply": ans["reply"]}
            for i, (p, ans) in enumerate(zip(probes, replier.replies(convs), strict=True))]
