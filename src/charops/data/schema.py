"""Typed records of charops' native format (pydantic v2).

Four record types, one JSON object per line in native JSONL (``docs/data-format.md``):

- :class:`CharacterProfile`: who the character is (CharacterGLM *attributes* and *behaviours*).
- :class:`Dialogue`: a multi-turn conversation with a character; every assistant turn is the
  character speaking.
- :class:`PreferencePair`: a context plus a chosen (in character) and a rejected reply (DPO).
- :class:`CorpusDocument`: plain text for continued pretraining.

Importers of other formats produce these same models; nothing downstream knows the source
format. No source field is dropped: what has no field of its own goes to ``extra``/``meta``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

Category = Literal["celebrity", "daily-life", "games-videos", "virtual-love", "other"]
Topic = Literal["chit-chat", "interview", "love", "other"]
Language = Literal["zh", "en"]
Role = Literal["system", "user", "assistant"]
RecordType = Literal["profile", "dialogue", "preference", "document"]

CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]
TOPICS: tuple[str, ...] = Topic.__args__  # type: ignore[attr-defined]


def _as_list(value: Any) -> Any:
    """Accept a single string where a list of strings is expected."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return value


StrList = Annotated[list[str], BeforeValidator(_as_list)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class CharacterProfile(_Record):
    """A character: CharacterGLM attributes and behaviours, rendered into the system prompt."""

    type: Literal["profile"] = "profile"
    name: str = Field(min_length=1, description="The character's name, unique in a dataset.")
    category: Category = Field("other", description="Character category used to break down evaluation.")
    language: Language = Field("zh", description="Language the character speaks and the prompt is rendered in.")
    # Attributes: identity and its structured parts.
    identity: str = Field("", description="Free-text identity summary (who they are).")
    gender: str = ""
    age: str = ""
    species: str = ""
    occupation: str = ""
    residence: str = ""
    relationship_status: str = ""
    nicknames: StrList = Field(default_factory=list)
    interests: StrList = Field(default_factory=list, description="Hobbies and interests.")
    likes: StrList = Field(default_factory=list)
    dislikes: StrList = Field(default_factory=list)
    viewpoints: StrList = Field(default_factory=list, description="Opinions and values.")
    experiences: StrList = Field(default_factory=list, description="Life experiences.")
    achievements: StrList = Field(default_factory=list)
    relationships: StrList = Field(default_factory=list, description="Social relationships.")
    # Behaviours.
    personality: str = ""
    linguistic_style: str = Field("", description="How they talk: register, dialect, sentence shape.")
    emotional_expression: str = Field("", description="How they show feelings.")
    interaction_patterns: str = Field("", description="How they treat the user and steer conversation.")
    catchphrases: StrList = Field(default_factory=list)
    classic_lines: StrList = Field(default_factory=list)
    greeting: str = ""
    # Character-card fields (TavernAI / SillyTavern V1-V3, see charops.data.cards).
    scenario: str = Field("", description="The situation the conversation starts in (rendered).")
    system_prompt: str = Field("", description="The card author's own system prompt; replaces the default opening ({{original}} keeps it).")
    post_history_instructions: str = Field("", description="Instructions the card wants after the history (rendered last).")
    alternate_greetings: StrList = Field(default_factory=list, description="Other opening lines (not rendered).")
    tags: StrList = Field(default_factory=list, description="Card tags (not rendered).")
    creator_notes: str = Field("", description="Notes for people using the card (not rendered).")
    source: str = ""
    extra: dict[str, Any] = Field(default_factory=dict, description="Source fields with no field of their own.")

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name is blank")
        return v


class Turn(_Record):
    role: Role
    content: str
    name: str | None = Field(None, description="Speaker's name in multi-party scenes (user turns).")

    @field_validator("content")
    @classmethod
    def _content_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("content is blank")
        return v


class Dialogue(_Record):
    """A multi-turn conversation; assistant turns are the character speaking."""

    type: Literal["dialogue"] = "dialogue"
    id: str = Field(min_length=1)
    character: str = Field(min_length=1, description="Name of the character (a CharacterProfile.name).")
    topic: Topic = "other"
    turns: list[Turn] = Field(min_length=1)
    source: str = ""
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description="Source fields with no field of their own; meta.eval_prompt=true marks an "
        "evaluation prompt (the character's reply is what comes next).",
    )

    @model_validator(mode="after")
    def _system_first(self) -> Dialogue:
        for i, turn in enumerate(self.turns):
            if turn.role == "system" and i != 0:
                raise ValueError(f"turns[{i}]: a system turn may only come first")
        return self

    @property
    def is_eval_prompt(self) -> bool:
        return bool(self.meta.get("eval_prompt"))

    @property
    def n_assistant_turns(self) -> int:
        return sum(t.role == "assistant" for t in self.turns)


class PreferencePair(_Record):
    """One DPO example: the context, a chosen reply (in character) and a rejected one."""

    type: Literal["preference"] = "preference"
    id: str = Field(min_length=1)
    character: str = Field(min_length=1)
    topic: Topic = "other"
    context: list[Turn] = Field(min_length=1, description="Turns before the reply; the last is a user turn.")
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    source: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> PreferencePair:
        if self.context[-1].role != "user":
            raise ValueError("context must end with a user turn")
        if not self.chosen.strip() or not self.rejected.strip():
            raise ValueError("chosen and rejected must not be blank")
        if self.chosen.strip() == self.rejected.strip():
            raise ValueError("chosen and rejected are the same text")
        return self


class CorpusDocument(_Record):
    """Plain text for continued pretraining."""

    type: Literal["document"] = "document"
    id: str = Field(min_length=1)
    text: str
    source: str = ""
    language: Language | None = None
    meta: dict[str, Any] = Field(default_factory=dict, description="Source fields with no field of their own.")

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is blank")
        return v


Record = CharacterProfile | Dialogue | PreferencePair | CorpusDocument

MODELS: dict[str, type[BaseModel]] = {
    "profile": CharacterProfile,
    "dialogue": Dialogue,
    "preference": PreferencePair,
    "document": CorpusDocument,
}
