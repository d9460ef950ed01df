"""Probes planted in multi-turn evaluation: a memory probe and knowledge-boundary questions.

    from charops.eval.multiturn.probes import memory_fact, recalled, boundary_questions, deflects
    fact = memory_fact("en", rng)              # {"statement", "question", "answer", "thing"}
    recalled("Of course, Pepper!", fact)       # True: the answer word is in the reply
    qs = boundary_questions(profile, rng)      # [{"kind": "later_events", "question": ...}, ...]
    deflects("Never heard of it, dear.", "en") # True: an in-character deflection, not an invented answer

**Memory** (CharacterBench's memory consistency, as a check a rule can make): the simulated user
states a fact about themselves in turn k ("By the way, my dog is called Pepper.") and asks it
back in turn k+m ("Do you remember my dog's name?"). The probe is *recalled* when the reply to
the question contains the answer (case-insensitive; for Chinese, the answer's characters in
order). A model that never saw the statement could only guess it, so a name list far from
everyday words keeps chance hits rare.

**Knowledge boundary** (Ditto, TimeChara): questions the character cannot know the answer to,
built from templates and the profile's era and setting, one per kind:

- ``later_events``: something after the character's time (a year well after their era);
- ``other_universe``: an event of another fiction's world;
- ``technical``: expert knowledge far outside their life and occupation.

The good reply stays in character and deflects (does not know, has never heard of it, turns the
question back); the bad one invents an answer. With an LLM judge the judge decides; in the
scripted case :func:`deflects` does, by markers of not knowing (zh/en lists below). The rule is
deliberately simple: it can be fooled by a reply that says "I don't know" and then invents, and
the report names it as a rule.
"""

from __future__ import annotations

import random
import re

MEMORY_FACTS = {
    "en": [("dog", "My dog is called {v}.", "Do you remember what my dog is called?", ["Pepperwick", "Biscotti", "Tamsin"]),
           ("sister", "My little sister's name is {v}.", "Do you still remember my sister's name?",
            ["Marisol", "Ottilie", "Brielle"]),
           ("hometown", "I grew up in a village called {v}.", "What was the name of the village I grew up in?",
            ["Larkspur Hollow", "Fennimore", "Ashbury Reach"]),
           ("boat", "My grandfather's old boat was named {v}.", "What was my grandfather's boat called again?",
            ["Windlass", "Marigold Star", "Quillon"])],
    "zh": [("小狗", "我家小狗叫{v}。", "你还记得我家小狗叫什么吗？", ["豆沙包", "年糕", "米粒"]),
           ("妹妹", "我妹妹的名字叫{v}。", "你还记得我妹妹叫什么名字吗？", ["周晓雯", "林一禾", "苏小满"]),
           ("老家", "我老家在一个叫{v}的小村子。", "我老家那个村子叫什么来着？", ["杏花湾", "石榴坪", "青檀沟"])],
}
_BY_THE_WAY = {"en": "By the way, {s}", "zh": "对了，{s}"}

BOUNDARY_KINDS = ("later_events", "other_universe", "technical")
_BOUNDARY = {
    "en": {
        "later_events": ["Who won the football World Cup in the year {year}?",
                         "What did you think of the big news from the year {year}, when the first city on Mars opened?",
                         "Which song topped the charts in {year}?"],
        "other_universe": ["How did you feel when Gandalf fell in the Mines of Moria?",
                           "Have you ever flown an X-wing fighter for the Rebel Alliance?",
                           "Which house did the Sorting Hat put you in at Hogwarts?"],
        "technical": ["Can you explain how to configure a Kubernetes ingress controller with TLS?",
                      "What is the time complexity of Dijkstra's algorithm with a Fibonacci heap, and why?",
                      "How does the CRISPR-Cas9 guide RNA find its target sequence?"],
    },
    "zh": {
        "later_events": ["{year}年的世界杯是哪支球队夺冠的？", "{year}年火星上第一座城市建成的时候，你怎么看？",
                         "{year}年最流行的歌是哪一首？"],
        "other_universe": ["甘道夫在摩瑞亚矿坑坠落的时候，你难过吗？", "你在霍格沃茨被分院帽分到了哪个学院？",
                           "你开过反抗军的X翼战机吗？"],
        "technical": ["你能讲讲怎么给 Kubernetes 的 ingress 控制器配置 TLS 吗？",
                      "用斐波那契堆实现的 Dijkstra 算法时间复杂度是多少？为什么？",
                      "CRISPR-Cas9 的向导 RNA 是怎么找到目标序列的？"],
    },
}
# Markers of not knowing / not recognising: an in-character deflection.
_DEFLECT = {
    "en": re.compile(
        r"\b(?:don'?t know|do not know|never heard|haven'?t heard|no idea|not sure what|not sure i follow|"
        r"what(?:'s| is) (?:a|an|that|this)|who(?:'s| is) that|can'?t say|couldn'?t say|no clue|beyond me|"
        r"never been|doesn'?t ring|don'?t follow|not from around|strange (?:word|name|question)|"
        r"what are you talking about|sounds like (?:a|some)|not something i|i wouldn'?t know|haven'?t the faintest)\b",
        re.IGNORECASE),
    "zh": re.compile(r"不知道|没听说|没听过|什么是|听不懂|不懂|不清楚|不明白|是什么东西|没见过|不晓得|啥是|这是啥|那是啥"),
}


def _lang(language: str | None) -> str:
    return "zh" if (language or "").startswith("zh") else "en"


def memory_fact(language: str | None, rng: random.Random) -> dict:
    """One fact for the simulated user to state and ask back (seeded by ``rng``)."""
    lang = _lang(language)
    thing, statement, question, values = rng.choice(MEMORY_FACTS[lang])
    value = rng.choice(values)
    return {"thing": thing, "answer": value, "statement": _BY_THE_WAY[lang].format(s=statement.format(v=value)),
            "question": question, "language": lang}


def recalled(reply: str, fact: dict) -> bool:
    """Whether ``reply`` names the fact's answer (case-insensitive; spaces ignored)."""
    squash = re.sub(r"\s+", "", reply or "").lower()
    return re.sub(r"\s+", "", fact["answer"]).lower() in squash


def profile_year(profile: dict) -> int:
    """The latest year the profile's era allows (a stated year in ``extra.sample_era`` or the
    setting fields, else the present): later events are asked about 60 years after it."""
    text = " ".join(str(v) for v in [(profile.get("extra") or {}).get("sample_era", ""), profile.get("scenario", ""),
                                     profile.get("identity", "")])
    years = [int(y) for y in re.findall(r"\b(1[0-9]{3}|20[0-9]{2})\b", text)]
    return max(years) if years else 2026


def boundary_questions(profile: dict, rng: random.Random) -> list[dict]:
    """One question per kind of :data:`BOUNDARY_KINDS` for this character (seeded)."""
    lang = _lang(profile.get("language"))
    year = profile_year(profile) + 60
    return [{"kind": kind, "question": rng.choice(_BOUNDARY[lang][kind]).format(year=year), "source": "template"}
            for kind in BOUNDARY_KINDS]


_LLM_PROMPT = """Write questions that the role-play character below CANNOT know the answer to, one of each kind:
- later_events: an event after the character's time (their era: {era});
- other_universe: something from another fictional world than theirs;
- technical: expert knowledge far outside their life and occupation ({occupation}).
Write each question as a user would ask the character, in {language}, one sentence.

## Character
{profile}

Answer with one JSON object and nothing else:
{{"later_events": "...", "other_universe": "...", "technical": "..."}}"""


def llm_boundary_prompt(profile: dict, system: str) -> str:
    """The prompt asking an LLM for one boundary question per kind for this character."""
    era = (profile.get("extra") or {}).get("sample_era") or f"up to {profile_year(profile)}"
    return _LLM_PROMPT.format(era=era, occupation=profile.get("occupation") or "unknown",
                              language="Chinese" if _lang(profile.get("language")) == "zh" else "English",
                              profile=system or profile.get("name", ""))


QUESTIONS_SCHEMA = {"type": "object", "properties": {k: {"type": "string", "minLength": 5, "maxLength": 200}
                                                    for k in BOUNDARY_KINDS},
                    "required": list(BOUNDARY_KINDS), "additionalProperties": False}


def parse_boundary_questions(text: str) -> dict[str, str]:
    """The LLM's questions by kind (every kind, non-empty), else :class:`AnswerError`."""
    from charops.eval.rubric import AnswerError, json_object

    obj = json_object(text)
    out = {k: " ".join(str(obj.get(k) or "").split()) for k in BOUNDARY_KINDS}
    missing = [k for k, v in out.items() if not v]
    if missing:
        raise AnswerError(f"no question for {', '.join(missing)}")
    return out


def deflects(reply: str, language: str | None) -> bool:
    """The scripted rule: the reply shows the character not knowing (see the module doc)."""
    return bool(_DEFLECT[_lang(language)].search(reply or ""))
