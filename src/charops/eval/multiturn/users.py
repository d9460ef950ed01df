"""Conversation starts and the simulated users who talk to the evaluated models.

    from charops.eval.multiturn.users import load_starts, ScriptedUser, LLMUser
    starts = load_starts(Path("runs/dataset"), limit=8, seed=0)
    user = ScriptedUser()                       # replays held-out user turns
    user = LLMUser(endpoint, cache)             # any OpenAI-compatible endpoint (charops's own too)

A **start** is what every model's conversation begins from, the same for all of them: the
held-out dialogue's system prompt (the character's profile), the character's greeting as the
first assistant turn when the profile has one, the user turns of that held-out dialogue followed
by the character's other held-out dialogues (a script long enough for ``turns``), and a persona
and a goal for an LLM user. Starts are ordered by a seeded shuffle, so ``limit`` picks the same
conversations on every run, spread over characters.

A **user** gives the next user message of each conversation at once (one call per turn for all
conversations, so an LLM user's requests go out concurrently):

- :class:`ScriptedUser` replays the script: turn t is the t-th scripted user turn. It never looks
  at the model's replies, so every model hears the same user lines and the comparison is paired.
- :class:`LLMUser` asks an OpenAI-compatible endpoint to write the user's next line, given the
  persona, the goal and the conversation so far (temperature 0, cached like judge answers).

The memory probe is planted by the rollout, not the user: it appends the statement to one user
turn and replaces a later one by the question (charops.eval.multiturn.probes).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from charops.errors import DataError
from charops.eval.llm import Endpoint, JudgeCache, ask_all, cache_key
from charops.eval.rubric import AnswerError, json_object, render_context
from charops.io import read_jsonl

PERSONAS = {
    "en": ["a curious regular who likes to chat", "a shy newcomer who warms up slowly",
           "a busy traveller passing through", "an old friend catching up"],
    "zh": ["一个爱聊天的老顾客", "一个慢热的新朋友", "一个路过的旅行者", "一个很久没见的老朋友"],
}
GOALS = {
    "en": ["get to know the character better", "ask for advice about something on your mind",
           "share some news and hear what they think"],
    "zh": ["多了解这个角色", "请角色帮你出出主意", "分享一件最近的事，听听角色的看法"],
}


def _lang(language: str | None) -> str:
    return "zh" if (language or "").startswith("zh") else "en"


def _profiles(dataset: Path) -> dict[str, dict]:
    path = dataset / "characters.jsonl"
    return {p["name"]: p for p in read_jsonl(path)} if path.is_file() else {}


def load_starts(dataset: Path, limit: int = 0, seed: int = 0) -> list[dict]:
    """Conversation starts from a prepared dataset's held-out dialogues (``sft/validation.jsonl``)."""
    path = dataset / "sft" / "validation.jsonl"
    if not path.is_file():
        raise DataError(f"eval mode=multiturn: dataset '{dataset}' has no sft/validation.jsonl; "
                        "run `charops data prepare` with validation_fraction > 0")
    rows = [r for r in read_jsonl(path) if any(m["role"] == "user" for m in r["messages"])]
    if not rows:
        raise DataError(f"eval mode=multiturn: {path} has no dialogue with a user turn to replay")
    profiles = _profiles(dataset)
    by_character: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_character[r.get("character") or ""].append(r)
    rng = random.Random(seed)
    order = list(rows)
    rng.shuffle(order)
    starts = []
    for row in order:
        msgs = row["messages"]
        system = [m for m in msgs[:1] if m["role"] == "system"]
        character = row.get("character")
        profile = profiles.get(character or "", {})
        # The script: this dialogue's user turns, then the character's other held-out dialogues'.
        script = [m["content"] for m in msgs if m["role"] == "user"]
        for other in by_character[character or ""]:
            if other is not row:
                script += [m["content"] for m in other["messages"] if m["role"] == "user"]
        opening = list(system)
        if profile.get("greeting"):
            opening.append({"role": "assistant", "content": profile["greeting"]})
        lang = _lang(row.get("language") or profile.get("language"))
        starts.append({"id": f"conv-{row['id']}", "dialogue": row["id"], "character": character,
                       "category": row.get("category") or profile.get("category") or "other",
                       "topic": row.get("topic") or "other", "language": lang, "opening": opening,
                       "script": script, "persona": rng.choice(PERSONAS[lang]), "goal": rng.choice(GOALS[lang]),
                       "profile": profile})
    return starts[:limit] if limit else starts


class ScriptedUser:
    """Replays each start's script; past its end, the script starts over (the turns repeat)."""

    kind = "scripted"

    def describe(self) -> dict:
        return {"kind": self.kind, "note": "replays the user turns of held-out dialogues"}

    def next_turns(self, starts: list[dict], conversations: list[list[dict]], turn: int) -> list[tuple[str, str, str | None]]:
        """(user message, source, error) of each conversation's turn ``turn`` (0-based)."""
        return [(s["script"][turn % len(s["script"])], "script", None) for s in starts]


_USER_PROMPT = {
    "en": ("You play a USER chatting with the character {character} in a role-play app. You are {persona}; "
           "your goal: {goal}. Write only your next message to {character}: one or two short sentences, "
           "in English, no name prefix. Answer with one JSON object and nothing else: "
           '{{"message": "<your message>"}}\n\n## Conversation so far\n{context}'),
    "zh": ("你在一个角色扮演应用里扮演用户，正在和角色{character}聊天。你是{persona}；你的目标：{goal}。"
           "只写你对{character}说的下一句话：一两句，中文，不要加名字前缀。只回答一个 JSON 对象："
           '{{"message": "<你的话>"}}\n\n## 目前的对话\n{context}'),
}
# Sent as response_format: a server with structured output (charops deploy, vLLM, OpenAI) then
# always writes a non-empty message; an endpoint without it answers in plain text, also accepted.
USER_SCHEMA = {"type": "object", "properties": {"message": {"type": "string", "minLength": 2, "maxLength": 300}},
               "required": ["message"], "additionalProperties": False}


def parse_user_line(text: str) -> str:
    """The user's message: the ``message`` of a JSON answer, else the plain text; one line."""
    try:
        obj = json_object(text)
    except AnswerError:
        obj = None
    line = str(obj.get("message", "")) if isinstance(obj, dict) else text
    line = " ".join(line.strip().strip('"').split())
    if not line:
        raise AnswerError("empty user message")
    return line[:500]


class LLMUser:
    """A user simulated by an LLM behind an OpenAI-compatible endpoint (persona + goal per start)."""

    kind = "openai"

    def __init__(self, endpoint: Endpoint, cache: JudgeCache | None = None, progress: bool = False):
        self.endpoint, self.cache, self.progress = endpoint, cache, progress

    def describe(self) -> dict:
        return {"kind": self.kind, "model": self.endpoint.model, "base_url": self.endpoint.base_url}

    def next_turns(self, starts: list[dict], conversations: list[list[dict]], turn: int) -> list[tuple[str, str, str | None]]:
        """(user message, source, error) of each conversation's turn ``turn``: source ``llm``, or
        ``script`` where the endpoint failed after its retries (the script's line stands in and
        the error says why)."""
        items = []
        for s, msgs in zip(starts, conversations, strict=True):
            prompt = _USER_PROMPT[s["language"]].format(
                character=s["character"] or "the character", persona=s["persona"], goal=s["goal"],
                context=render_context(msgs, s["character"]))
            items.append((cache_key("user-simulator@1", self.endpoint.model, prompt), prompt, parse_user_line,
                          USER_SCHEMA))
        answers = ask_all(items, self.endpoint, self.cache, progress=self.progress, desc=f"user turn {turn + 1}")
        return [(ans.value, "llm", None) if ans.error is None else (s["script"][turn % len(s["script"])], "script",
                                                                     ans.error)
                for s, ans in zip(starts, answers, strict=True)]
