"""A character profile as a natural-language system prompt (Chinese or English).

CharacterGLM conditions the model on the character's *attributes* (identity, interests,
viewpoints, experiences, achievements, relationships) and *behaviours* (linguistic style,
emotional expression, interaction patterns) written out as text. The prompt opens by telling
the model it plays the character and must stay in character, then lists what the profile
holds; empty fields are left out. The same profile always gives the same text (training and
serving must agree byte for byte)::

    from charops.data.render import render_system_prompt
    print(render_system_prompt(profile))          # in profile.language
    print(render_system_prompt(profile, "en"))
"""

from __future__ import annotations

import json
import re
from typing import Any

from charops.data.schema import CharacterProfile
from charops.errors import DataError

# (field, zh label, en label) in the order they are written; lists are joined, classic lines
# and catchphrases have their own shapes below.
ATTRIBUTES = (
    ("nicknames", "昵称", "Nicknames"),
    ("gender", "性别", "Gender"),
    ("age", "年龄", "Age"),
    ("species", "物种", "Species"),
    ("occupation", "职业", "Occupation"),
    ("residence", "居住地", "Residence"),
    ("relationship_status", "恋爱状态", "Relationship status"),
    ("identity", "身份", "Identity"),
    ("interests", "兴趣爱好", "Interests"),
    ("likes", "喜欢", "Likes"),
    ("dislikes", "不喜欢", "Dislikes"),
    ("viewpoints", "观点", "Viewpoints"),
    ("experiences", "经历", "Experiences"),
    ("achievements", "成就", "Achievements"),
    ("relationships", "人际关系", "Relationships"),
)
BEHAVIOURS = (
    ("personality", "性格", "Personality"),
    ("linguistic_style", "语言风格", "Linguistic style"),
    ("emotional_expression", "情感表达", "Emotional expression"),
    ("interaction_patterns", "互动方式", "Interaction patterns"),
)

# ``extra`` keys that are kept for round trips, not written into the prompt (a character card's
# lorebook, extensions and raw fields: charops.data.cards).
NOT_RENDERED = ("tavern_card",)

_TEXT = {
    "zh": {
        "intro": "你将扮演{name}。请始终以{name}的身份、性格和说话方式与用户对话，保持角色，"
                 "不要跳出角色，也不要提及自己是AI或语言模型。",
        "attributes": "【角色信息】", "behaviours": "【行为特点】", "other": "【其他】",
        "scenario": "【场景】", "instructions": "【注意】",
        "name": "姓名", "catchphrases": "口头禅", "classic_lines": "经典台词",
        "sep": "：", "join": "；", "quote": "“{}”", "quote_join": "、",
    },
    "en": {
        "intro": "You are {name}. Stay in character as {name} for the whole conversation: speak "
                 "with their identity, personality and way of talking, and never say you are an "
                 "AI or a language model.",
        "attributes": "Character profile:", "behaviours": "Behaviour:", "other": "Other:",
        "scenario": "Scenario:", "instructions": "Instructions:",
        "name": "Name", "catchphrases": "Catchphrases", "classic_lines": "Classic lines",
        "sep": ": ", "join": "; ", "quote": "\"{}\"", "quote_join": ", ",
    },
}


def _value(value: Any, t: dict[str, str]) -> str:
    """One field's text: strings stripped, lists joined, anything else as compact JSON."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return t["join"].join(s for s in (_value(v, t) for v in value) if s)
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def render_system_prompt(profile: CharacterProfile, language: str | None = None) -> str:
    """The system prompt for ``profile`` in ``language`` (``zh``/``en``; default its own)."""
    language = language or profile.language
    if language not in _TEXT:
        raise DataError(f"render_system_prompt: language '{language}' is not one of zh, en")
    t = _TEXT[language]
    name = profile.name.strip()

    def line(label: str, value: Any) -> list[str]:
        text = _value(value, t)
        return [f"{label}{t['sep']}{text}"] if text else []

    attributes = line(t["name"], name)
    for field, zh, en in ATTRIBUTES:
        attributes += line(zh if language == "zh" else en, getattr(profile, field))
    behaviours: list[str] = []
    for field, zh, en in BEHAVIOURS:
        behaviours += line(zh if language == "zh" else en, getattr(profile, field))
    catchphrases = [c.strip() for c in profile.catchphrases if c.strip()]
    if catchphrases:
        behaviours.append(f"{t['catchphrases']}{t['sep']}"
                          + t["quote_join"].join(t["quote"].format(c) for c in catchphrases))
    classic = [c.strip() for c in profile.classic_lines if c.strip()]
    if classic:
        behaviours.append(f"{t['classic_lines']}{t['sep'].rstrip()}")
        behaviours += [f"- {c}" for c in classic]
    other: list[str] = []
    for key, value in profile.extra.items():
        if key not in NOT_RENDERED:
            other += line(str(key), value)

    intro = t["intro"].format(name=name)
    if profile.system_prompt.strip():  # a card's own prompt; {{original}} is ours (SillyTavern's rule)
        intro = re.sub(r"\{\{\s*original\s*\}\}", lambda _: intro, profile.system_prompt.strip(),
                       flags=re.IGNORECASE)
    blocks = [intro]
    scenario = [profile.scenario.strip()] if profile.scenario.strip() else []
    instructions = [profile.post_history_instructions.strip()] if profile.post_history_instructions.strip() else []
    for title, lines in ((t["attributes"], attributes), (t["behaviours"], behaviours),
                         (t["scenario"], scenario), (t["other"], other),
                         (t["instructions"], instructions)):
        if lines:
            blocks.append("\n".join([title, *lines]))
    return "\n\n".join(blocks)
