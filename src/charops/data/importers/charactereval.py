"""CharacterEval (Tu et al. 2024) test data and character profiles.

Test data (``test_data.jsonl`` -- a JSON *array* despite its name) holds
``{"id", "role", "novel_name", "context"}``. ``context`` is newline-separated
``speaker：utterance`` lines (full-width ``：`` or ASCII ``:``, whichever comes first).
``role`` is the character played: its lines become assistant turns, every other speaker a
user turn carrying ``name``. Each context is an evaluation prompt: the character's next line
is what a model must produce, so ``meta.eval_prompt`` is true; ``novel_name``, the original
``id`` and any other fields are kept in ``meta``. A context may hold no line by the character.

A line without a speaker continues the previous utterance (joined with a newline); when the
*first* line has no speaker the record is rejected ("context: first line has no speaker"),
since there is no turn to attach it to and guessing a speaker would put words in someone's
mouth. Text before a colon counts as a speaker only when it is short (at most 30 characters)
and free of brackets and sentence punctuation, so ``（他想：算了）`` stays text.

Profiles (``character_profiles.json``) are one JSON object keyed by character name whose
values use Chinese keys (姓名, 性别, 人物经历, ...), mapped below; every key with no profile
field of its own lands in ``extra`` (nothing is dropped)::

    from pathlib import Path
    from charops.data.importers import charactereval
    parsed = charactereval.parse_contexts(Path("test_data.jsonl"), "test_data.jsonl")
    profiles = charactereval.parse_profiles(Path("character_profiles.json"), "character_profiles.json")
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from charops.data.importers.common import (
    FileRejected,
    Parsed,
    Reject,
    as_list,
    as_text,
    build,
    json_document,
)
from charops.data.schema import CharacterProfile, Dialogue

# Chinese profile key -> CharacterProfile field. Two spellings map to likes and to dislikes.
PROFILE_KEYS: dict[str, str] = {
    "姓名": "name", "性别": "gender", "物种": "species", "年龄": "age", "工作": "occupation",
    "昵称": "nicknames", "人物经历": "experiences", "人物关系": "relationships",
    "人物性格": "personality", "爱好": "interests",
    "喜欢的事情": "likes", "喜欢的东西": "likes", "喜欢的事情/东西": "likes",
    "不喜欢的事情": "dislikes", "不喜欢的东西": "dislikes", "不喜欢的事情/东西": "dislikes",
    "经典台词": "classic_lines", "口头禅": "catchphrases", "恋爱状态": "relationship_status",
    "居住地": "residence",
}
_LIST_FIELDS = {n for n, f in CharacterProfile.model_fields.items() if f.annotation is not str
                and n not in ("extra", "type", "category", "language")}

_SPEAKER = re.compile(r"^\s*([^：:（）()【】「」“”\"，。！？、,!?]{1,30}?)\s*[：:]\s?(.*)$")


def split_context(context: str, role: str) -> list[dict] | str:
    """``speaker：utterance`` lines -> turns; a reason string when the context is unusable."""
    turns: list[dict] = []
    for line in context.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        m = _SPEAKER.match(line)
        # The earliest colon decides: "张三：现在10:30" splits at '：', "Tom: it's 10:30" at ':'.
        if m is None:
            if not turns:
                return "context: first line has no speaker"
            turns[-1]["content"] = f"{turns[-1]['content']}\n{line.strip()}".strip("\n")
            continue
        speaker, text = m.group(1).strip(), m.group(2).strip()
        if speaker == role:
            turns.append({"role": "assistant", "content": text})
        else:
            turns.append({"role": "user", "content": text, "name": speaker})
    if not turns:
        return "context: blank"
    for i, t in enumerate(turns):
        if not t["content"].strip():
            return f"context turn {i + 1} ({t.get('name') or role}): empty utterance"
    return turns


def parse_contexts(path: Path, display: str, character: str | None = None) -> Parsed:
    data = json_document(path)
    if not isinstance(data, list):
        raise FileRejected("not a JSON array (CharacterEval test data is an array of "
                           "{id, role, novel_name, context}; for profiles use --format charactereval-profiles)")
    out = Parsed()
    for i, item in enumerate(data):
        loc = f"index {i}"
        if not isinstance(item, dict):
            out.rejects.append(Reject(display, loc, "dialogue", "not a JSON object"))
            continue
        missing = [k for k in ("role", "context") if not isinstance(item.get(k), str) or not item[k].strip()]
        if missing:
            out.rejects.append(Reject(display, loc, "dialogue", f"{missing[0]}: missing or not text"))
            continue
        turns = split_context(item["context"], item["role"].strip())
        if isinstance(turns, str):
            out.rejects.append(Reject(display, loc, "dialogue", turns))
            continue
        original_id = item.get("id")
        meta: dict[str, Any] = {k: v for k, v in item.items() if k not in ("id", "role", "context")}
        meta.update(eval_prompt=True, original_id=original_id)
        record = build(Dialogue, {
            "id": f"{path.stem}-{original_id if original_id not in (None, '') else i}",
            "character": item["role"].strip(),
            "turns": turns,
            "source": f"{display}#{i}",
            "meta": meta,
        })
        if isinstance(record, str):
            out.rejects.append(Reject(display, loc, "dialogue", record))
        else:
            out.records.append((record, loc))
    return out


def profile_fields(name: str, value: Any) -> dict | str:
    """One CharacterEval profile (Chinese keys) -> CharacterProfile fields, or a reason."""
    if isinstance(value, str):
        return {"name": name, "identity": value}  # a free-text profile is the identity
    if not isinstance(value, dict):
        return "profile must be an object of Chinese keys (or a text)"
    data: dict[str, Any] = {"name": name}
    extra: dict[str, Any] = {}
    for key, raw in value.items():
        target = PROFILE_KEYS.get(str(key).strip())
        if target is None:
            extra[key] = raw  # 其他 and every unknown key: kept verbatim
        elif target == "name":
            if as_text(raw).strip() != name:
                extra[key] = raw  # the object key is the name the test data uses; keep the other
        elif target in _LIST_FIELDS:
            data[target] = data.get(target, []) + as_list(raw)
        elif as_text(raw).strip():
            data[target] = as_text(raw)
    if extra:
        data["extra"] = extra
    return data


def parse_profiles(path: Path, display: str, character: str | None = None) -> Parsed:
    data = json_document(path)
    if not isinstance(data, dict):
        raise FileRejected("not a JSON object keyed by character name (CharacterEval profiles)")
    out = Parsed()
    for name, value in data.items():
        loc = f"key '{name}'"
        fields = profile_fields(str(name).strip(), value)
        if isinstance(fields, str):
            out.rejects.append(Reject(display, loc, "profile", fields))
            continue
        fields["source"] = f"{display}#{name}"
        record = build(CharacterProfile, fields)
        if isinstance(record, str):
            out.rejects.append(Reject(display, loc, "profile", record))
        else:
            out.records.append((record, loc))
    return out
