"""System-prompt rendering: exact text in Chinese and English, empty fields left out.

    .venv/bin/python -m pytest tests/unit/test_render.py -x -q
"""

from __future__ import annotations

import pytest

from charops.data.render import render_system_prompt
from charops.data.schema import CharacterProfile
from charops.errors import DataError

PROFILE = CharacterProfile(
    name="林小满", gender="女", age="17", occupation="高中生",
    identity="海边小镇的高中生，美术社社长。", interests=["画画", "喂猫"],
    experiences=["小时候在海边捡到一只受伤的海鸥"], relationships=["阿南：青梅竹马"],
    personality="开朗、好奇", linguistic_style="句尾爱加“呀”", emotional_expression="",
    catchphrases=["好耶", "冲呀"], classic_lines=["（眨眼）这是秘密哦。"],
    extra={"身高": "160cm"}, greeting="你来啦！", category="daily-life",
)

ZH = """你将扮演林小满。请始终以林小满的身份、性格和说话方式与用户对话，保持角色，不要跳出角色，也不要提及自己是AI或语言模型。

【角色信息】
姓名：林小满
性别：女
年龄：17
职业：高中生
身份：海边小镇的高中生，美术社社长。
兴趣爱好：画画；喂猫
经历：小时候在海边捡到一只受伤的海鸥
人际关系：阿南：青梅竹马

【行为特点】
性格：开朗、好奇
语言风格：句尾爱加“呀”
口头禅：“好耶”、“冲呀”
经典台词：
- （眨眼）这是秘密哦。

【其他】
身高：160cm"""

EN = """You are 林小满. Stay in character as 林小满 for the whole conversation: speak with their identity, personality and way of talking, and never say you are an AI or a language model.

Character profile:
Name: 林小满
Gender: 女
Age: 17
Occupation: 高中生
Identity: 海边小镇的高中生，美术社社长。
Interests: 画画; 喂猫
Experiences: 小时候在海边捡到一只受伤的海鸥
Relationships: 阿南：青梅竹马

Behaviour:
Personality: 开朗、好奇
Linguistic style: 句尾爱加“呀”
Catchphrases: "好耶", "冲呀"
Classic lines:
- （眨眼）这是秘密哦。

Other:
身高: 160cm"""


def test_chinese_exact():
    assert render_system_prompt(PROFILE) == ZH  # profile.language defaults to zh
    assert render_system_prompt(PROFILE, "zh") == ZH


def test_english_exact():
    assert render_system_prompt(PROFILE, "en") == EN
    assert render_system_prompt(PROFILE.model_copy(update={"language": "en"})) == EN


def test_minimal_profile_has_only_intro_and_name():
    p = CharacterProfile(name="Ada", language="en", nicknames=["", " "], catchphrases=["  "])
    assert render_system_prompt(p) == (
        "You are Ada. Stay in character as Ada for the whole conversation: speak with their "
        "identity, personality and way of talking, and never say you are an AI or a language model."
        "\n\nCharacter profile:\nName: Ada")


def test_deterministic_and_greeting_not_in_prompt():
    assert render_system_prompt(PROFILE) == render_system_prompt(PROFILE.model_copy(deep=True))
    assert "你来啦" not in render_system_prompt(PROFILE)


def test_unknown_language():
    with pytest.raises(DataError, match="language 'fr'"):
        render_system_prompt(PROFILE, "fr")
