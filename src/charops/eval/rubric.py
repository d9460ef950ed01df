"""Judging rubrics: versioned YAML files (``configs/eval/rubrics/<name>.yaml``), their prompts and
the strict parsing of a judge's JSON answer.

    from charops.eval.rubric import load_rubric, pointwise_prompt, parse_pointwise
    rubric = load_rubric("characterglm-v1")          # or a path to a YAML file
    prompt = pointwise_prompt(rubric, reply_record, dims=rubric.keys)
    scores = parse_pointwise(rubric, answer_text, dims=rubric.keys)   # raises AnswerError

A rubric has ``name``, ``version``, ``scale`` {min, max}, ``dimensions`` (``key``, ``definition``,
``anchors`` {score: text} for every score of the scale, optional ``aliases``), and two prompt
templates whose placeholders ``{profile}``, ``{context}``, ``{character}``, ``{reply}``,
``{dimensions}``, ``{dimension_keys}`` (point-wise) and ``{reply_a}``, ``{reply_b}`` (pair-wise)
are filled by plain replacement, so braces elsewhere in a template (its JSON example) and in
the dialogue text need no escaping.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from charops.config import preset_dir, read_yaml
from charops.errors import ConfigError


class AnswerError(ValueError):
    """A judge's answer is not the JSON verdict the rubric asks for (it is retried, then unjudged)."""


@dataclass(frozen=True)
class Rubric:
    name: str
    version: int
    source: str
    scale: tuple[int, int]
    dimensions: tuple[dict, ...]
    pointwise_template: str
    pairwise_template: str
    path: str

    @property
    def keys(self) -> list[str]:
        return [d["key"] for d in self.dimensions]

    @property
    def ident(self) -> str:
        """``name@version``: what the judge cache and every record name."""
        return f"{self.name}@{self.version}"

    def canonical(self, name: str) -> str | None:
        """Dimension key for ``name`` (a key or one of its aliases, case-insensitive)."""
        low = name.strip().lower()
        for d in self.dimensions:
            if low == d["key"].lower() or low in (a.lower() for a in d.get("aliases", [])):
                return d["key"]
        return None


def rubric_dir() -> Path:
    return preset_dir("eval") / "rubrics"


def load_rubric(source: str) -> Rubric:
    """A rubric by name (``configs/eval/rubrics/<name>.yaml``) or path; checked in full."""
    path = Path(source)
    if not path.is_file():
        path = rubric_dir() / f"{source}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in rubric_dir().glob("*.yaml")))
            raise ConfigError(f"rubric '{source}': no such file and no rubric of that name (rubrics: {known})")
    data = read_yaml(path)
    for key in ("name", "version", "scale", "dimensions", "pointwise_prompt", "pairwise_prompt"):
        if key not in data:
            raise ConfigError(f"{path}: rubric needs '{key}'")
    lo, hi = int(data["scale"]["min"]), int(data["scale"]["max"])
    dims = []
    for i, d in enumerate(data["dimensions"]):
        if not isinstance(d, dict) or not d.get("key") or not d.get("definition"):
            raise ConfigError(f"{path}: dimensions[{i}] needs 'key' and 'definition'")
        try:
            anchors = {int(k): str(v) for k, v in (d.get("anchors") or {}).items()}
        except ValueError:
            raise ConfigError(f"{path}: dimension '{d['key']}': anchors must be keyed by score") from None
        if sorted(anchors) != list(range(lo, hi + 1)):
            raise ConfigError(f"{path}: dimension '{d['key']}' needs an anchor for every score {lo}..{hi}")
        dims.append({"key": str(d["key"]), "definition": " ".join(str(d["definition"]).split()),
                     "anchors": anchors, "aliases": [str(a) for a in d.get("aliases", [])]})
    for key, needed in (("pointwise_prompt", ("{reply}", "{dimensions}")),
                        ("pairwise_prompt", ("{reply_a}", "{reply_b}"))):
        missing = [p for p in needed if p not in data[key]]
        if missing:
            raise ConfigError(f"{path}: {key} lacks the placeholder {missing[0]}")
    return Rubric(name=str(data["name"]), version=int(data["version"]), source=str(data.get("source", "")),
                  scale=(lo, hi), dimensions=tuple(dims), pointwise_template=data["pointwise_prompt"],
                  pairwise_template=data["pairwise_prompt"], path=str(path))


# ---------------------------------------------------------------------------------------------
# Prompts


def render_context(messages: list[dict], character: str | None) -> str:
    """The dialogue after the system prompt, one ``speaker: text`` line per turn."""
    lines = []
    for m in messages:
        if m["role"] == "system":
            continue
        who = (character or "Character") if m["role"] == "assistant" else (m.get("name") or "User")
        lines.append(f"{who}: {m['content']}")
    return "\n".join(lines) or "(the conversation starts with the character's reply)"


def _profile(record: dict) -> str:
    if record.get("system"):
        return record["system"]
    system = next((m["content"] for m in record.get("messages", []) if m["role"] == "system"), "")
    return system or "(no profile given)"


def _fill(template: str, values: dict[str, str]) -> str:
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def pointwise_prompt(rubric: Rubric, record: dict, dims: list[str]) -> str:
    """The point-wise prompt for one reply record (``replies.jsonl`` row), asking for ``dims``."""
    by_key = {d["key"]: d for d in rubric.dimensions}
    blocks = []
    for key in dims:
        d = by_key[key]
        anchors = "; ".join(f"{s} = {t}" for s, t in sorted(d["anchors"].items()))
        blocks.append(f"- {key}: {d['definition']}\n  Scale: {anchors}")
    return _fill(rubric.pointwise_template, {
        "profile": _profile(record), "context": render_context(record["messages"], record.get("character")),
        "character": record.get("character") or "the character", "reply": record["reply"] or "(empty reply)",
        "dimensions": "\n".join(blocks), "dimension_keys": ", ".join(json.dumps(k, ensure_ascii=False) for k in dims)})


def pairwise_prompt(rubric: Rubric, record: dict, reply_first: str, reply_second: str) -> str:
    """The pair-wise prompt: ``record`` gives profile and context; the two replies in shown order."""
    return _fill(rubric.pairwise_template, {
        "profile": _profile(record), "context": render_context(record["messages"], record.get("character")),
        "character": record.get("character") or "the character",
        "reply_a": reply_first or "(empty reply)", "reply_b": reply_second or "(empty reply)"})


# ---------------------------------------------------------------------------------------------
# Answers

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def json_object(text: str) -> dict:
    """The answer must be one JSON object (optionally inside a ```json fence); nothing else."""
    body = text.strip()
    m = _FENCE.match(body)
    if m:
        body = m.group(1)
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise AnswerError(f"not a JSON object ({exc.msg} at char {exc.pos})") from None
    if not isinstance(obj, dict):
        raise AnswerError("answer is JSON but not an object")
    return obj


# OpenAI's strict structured outputs take a subset of JSON schema: every property required,
# additionalProperties false, no string length bounds; these schemas stay inside it.
REASON = {"type": "string"}


def pointwise_schema(rubric: Rubric, dims: list[str]) -> dict:
    """The JSON schema of a point-wise answer (sent as ``response_format``): an integer score
    within the scale for exactly ``dims``, then a reason."""
    lo, hi = rubric.scale
    scores = {"type": "object", "properties": {d: {"type": "integer", "enum": list(range(lo, hi + 1))} for d in dims},
              "required": list(dims), "additionalProperties": False}
    return {"type": "object", "properties": {"scores": scores, "reason": REASON},
            "required": ["scores", "reason"], "additionalProperties": False}


PAIRWISE_SCHEMA = {"type": "object", "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]},
                                                    "reason": REASON},
                   "required": ["winner", "reason"], "additionalProperties": False}


def parse_pointwise(rubric: Rubric, text: str, dims: list[str]) -> dict[str, int]:
    """``{dimension: score}`` for exactly ``dims``, integers within the scale, or AnswerError."""
    obj = json_object(text)
    scores = obj.get("scores")
    if not isinstance(scores, dict):
        raise AnswerError("answer has no 'scores' object")
    lo, hi = rubric.scale
    out: dict[str, int] = {}
    for name, value in scores.items():
        key = rubric.canonical(str(name))
        if key is None or key not in dims:
            raise AnswerError(f"score for a dimension not asked: {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value \
                or not lo <= value <= hi:
            raise AnswerError(f"score of {key} must be an integer {lo}..{hi}, got {value!r}")
        out[key] = int(value)
    missing = [d for d in dims if d not in out]
    if missing:
        raise AnswerError(f"answer lacks a score for {missing[0]}")
    return {d: out[d] for d in dims}


def parse_pairwise(text: str) -> str:
    """``"A"``, ``"B"`` or ``"tie"`` (the *shown* position that won), or AnswerError."""
    obj = json_object(text)
    winner = obj.get("winner")
    if not isinstance(winner, str) or winner.strip().lower() not in ("a", "b", "tie"):
        raise AnswerError(f"'winner' must be \"A\", \"B\" or \"tie\", got {winner!r}")
    w = winner.strip().lower()
    return "tie" if w == "tie" else w.upper()
