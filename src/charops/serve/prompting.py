"""How a chat request becomes the prompt the model sees: the character-prompt policy, the user's
persona, a lorebook, and assistant prefill / continue.

- **Policy** (``character_prompt``): when the client brings its own system message, ``merge``
  (the default) keeps the trained profile and appends the client's system text after it;
  ``client`` uses only the client's text; ``profile`` only the trained profile (the client's
  system messages are dropped). Without a client system message every policy uses the profile.
  The server's ``--character-prompt`` sets the default, the request field overrides it, and the
  response header ``x-charops-character-prompt`` says which applied (``none``: no character).
- **Persona** (``persona: {name, description}``): the name becomes the user turns' speaker name
  (the chat template renders it), the description a block of the system prompt.
- **Lorebook** (``lorebook: true``): the card's ``character_book`` (kept in
  ``profile.extra["tavern_card"]``): entries whose keys occur in the last ``scan_depth`` turns
  (constant entries always; with the book's ``recursive_scanning`` also keys in activated entries'
  text) go into the system prompt before or after the profile, in ``insertion_order``, highest
  ``priority`` first within the book's ``token_budget``.
- **Continue**: a trailing assistant message (or ``continue_final_message: true``) is continued
  in place, vLLM's convention: no new assistant header, the reply is the text after it.

::

    from charops.serve.prompting import build_chat
    chat = build_chat(messages, character, tokenizer, policy="merge", body=request_body)
    chat.prompt_ids, chat.policy, chat.continued
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from charops.data.cards import EXTRA_KEY
from charops.serve.characters import Character
from charops.serve.structured import RequestError

POLICIES = ("merge", "client", "profile")
DEFAULT_SCAN_DEPTH = 2  # SillyTavern's default world-info scan depth
DEFAULT_TOKEN_BUDGET = 512
_PERSONA = {"zh": ("【用户信息】", "姓名：", ""), "en": ("About the user:", "Name: ", "")}


@dataclasses.dataclass
class ChatPrompt:
    messages: list[dict]
    prompt_ids: list[int]
    policy: str  # merge | client | profile | none
    continued: bool
    lore_entries: list[str] = dataclasses.field(default_factory=list)


def policy_of(body: dict, default: str) -> str:
    value = body.get("character_prompt", default)
    if value not in POLICIES:
        raise RequestError(f"'character_prompt' is {value!r}; it must be one of {', '.join(POLICIES)}",
                           "character_prompt")
    return value


def persona_of(body: dict) -> tuple[str, str]:
    """(name, description) of the request's ``persona`` extension ("" when absent)."""
    persona = body.get("persona")
    if persona is None:
        return "", ""
    if not isinstance(persona, dict) or not all(isinstance(persona.get(k, ""), str) for k in ("name", "description")):
        raise RequestError("'persona' must be an object {name: string, description: string}", "persona")
    if set(persona) - {"name", "description"}:
        extra = ", ".join(sorted(set(persona) - {"name", "description"}))
        raise RequestError(f"'persona' has unknown fields ({extra}); it takes name and description", "persona")
    return persona.get("name", "").strip(), persona.get("description", "").strip()


def _persona_block(name: str, description: str, language: str) -> str:
    title, name_label, _ = _PERSONA.get(language, _PERSONA["en"])
    lines = [title]
    if name:
        lines.append(f"{name_label}{name}")
    if description:
        lines.append(description)
    return "\n".join(lines)


# -- lorebook -----------------------------------------------------------------------------------

def character_book(character: Character) -> dict | None:
    """The card's ``character_book`` kept in the profile, or None."""
    kept = character.profile.extra.get(EXTRA_KEY)
    if not isinstance(kept, dict):
        return None
    book = (kept.get("data") or {}).get("character_book")
    return book if isinstance(book, dict) and isinstance(book.get("entries"), list) else None


def _key_hit(key: str, text: str, case_sensitive: bool) -> bool:
    key = key.strip()
    if not key:
        return False
    if len(key) > 2 and key.startswith("/") and key.rfind("/") > 0:  # SillyTavern's /regex/flags keys
        pattern, _, flags = key[1:].rpartition("/")
        try:
            return re.search(pattern, text, re.IGNORECASE if "i" in flags else 0) is not None
        except re.error:
            return False
    return key in text if case_sensitive else key.lower() in text.lower()


def _position(entry: dict) -> str:
    """``before_char`` or ``after_char``: the V2 field, else SillyTavern's numeric extension (0
    before the character, 1 after; its author's-note and depth positions count as after)."""
    pos = entry.get("position")
    if pos in ("before_char", "after_char"):
        return pos
    return "before_char" if _extensions(entry).get("position") == 0 else "after_char"


def _extensions(entry: dict) -> dict:
    return entry["extensions"] if isinstance(entry.get("extensions"), dict) else {}


def lorebook_entries(book: dict, turns: list[dict], count_tokens, *, scan_depth: int | None = None,
                     token_budget: int | None = None) -> tuple[list[str], list[str]]:
    """(before_char, after_char) entry texts activated by the last ``scan_depth`` turns, within
    ``token_budget`` tokens (constant entries first, then higher ``priority``), each list in
    ``insertion_order``.

    With the book's ``recursive_scanning``, the text of activated entries is scanned too, until
    no further entry activates: SillyTavern's recursion, with its entry extensions
    ``exclude_recursion`` (only the chat can activate the entry) and ``prevent_recursion``
    (the entry's own text activates nothing)."""
    depth = scan_depth if scan_depth is not None else int(book.get("scan_depth") or DEFAULT_SCAN_DEPTH)
    budget = token_budget if token_budget is not None else int(book.get("token_budget") or DEFAULT_TOKEN_BUDGET)
    recent = "\n".join(t["content"] for t in turns[-depth:] if t["role"] != "system") if depth > 0 else ""
    candidates = [(i, e) for i, e in enumerate(book.get("entries") or [])
                  if isinstance(e, dict) and e.get("enabled", True) is not False
                  and isinstance(e.get("content"), str) and e["content"].strip()]

    def hit(e: dict, text: str) -> bool:
        case = bool(e.get("case_sensitive"))
        found = any(_key_hit(k, text, case) for k in e.get("keys") or [] if isinstance(k, str))
        if found and e.get("selective") and e.get("secondary_keys"):
            found = any(_key_hit(k, text, case) for k in e["secondary_keys"] if isinstance(k, str))
        return found

    active = [(i, e) for i, e in candidates if e.get("constant") or hit(e, recent)]
    if book.get("recursive_scanning"):
        scanned, new = recent, active
        while new:  # each round adds at least one entry, so it ends
            scanned = "\n".join([scanned, *(e["content"] for _, e in new
                                              if not _extensions(e).get("prevent_recursion"))])
            seen = {i for i, _ in active}
            new = [(i, e) for i, e in candidates if i not in seen
                   and not _extensions(e).get("exclude_recursion") and hit(e, scanned)]
            active += new
    # Budget: constant entries, then by priority (higher first), then insertion order.
    ranked = sorted(active, key=lambda ie: (not ie[1].get("constant"), -float(ie[1].get("priority") or 0),
                                            float(ie[1].get("insertion_order") or 0), ie[0]))
    kept, used = [], 0
    for i, e in ranked:
        cost = count_tokens(e["content"])
        if used + cost > budget:
            continue
        used += cost
        kept.append((i, e))
    kept.sort(key=lambda ie: (float(ie[1].get("insertion_order") or 0), ie[0]))
    before = [e["content"].strip() for _, e in kept if _position(e) == "before_char"]
    after = [e["content"].strip() for _, e in kept if _position(e) == "after_char"]
    return before, after


# -- the prompt ---------------------------------------------------------------------------------

def continues(messages: list[dict], body: dict) -> bool:
    """Whether the reply continues the last (assistant) message instead of starting a new one."""
    flag = body.get("continue_final_message")
    if flag is not None and not isinstance(flag, bool):
        raise RequestError("'continue_final_message' must be true or false", "continue_final_message")
    last_is_assistant = messages[-1]["role"] == "assistant"
    if flag and not last_is_assistant:
        raise RequestError("'continue_final_message' needs the last message to be an assistant message",
                           "continue_final_message")
    if body.get("add_generation_prompt") is True and flag:
        raise RequestError("'add_generation_prompt' and 'continue_final_message' cannot both be true",
                           "continue_final_message")
    if flag is None:  # vLLM's convention: a trailing assistant message is a prefill to continue
        return last_is_assistant and body.get("add_generation_prompt") is not True
    return flag


def build_chat(messages: list[dict], character: Character | None, tokenizer: Any, *, policy: str,
               body: dict) -> ChatPrompt:
    """The conversation and prompt ids of a chat request.

    ``messages`` are the request's checked messages (roles system/user/assistant); the
    character's profile, persona, lorebook and client system text are combined into the one
    leading system message according to ``policy``.
    """
    client_system = [m["content"] for m in messages if m["role"] == "system"]
    turns = [dict(m) for m in messages if m["role"] != "system"]
    persona_name, persona_desc = persona_of(body)
    lore = body.get("lorebook", False)
    if not isinstance(lore, bool):
        raise RequestError("'lorebook' must be true or false", "lorebook")
    if persona_name:
        for m in turns:
            if m["role"] == "user" and not m.get("name"):
                m["name"] = persona_name

    language = character.profile.language if character is not None else "en"
    parts: list[str] = []
    entries: list[str] = []
    if character is None:
        applied = "none"
        parts += client_system
    else:
        before, after = [], []
        if lore:
            book = character_book(character)
            if book is not None:
                def count(text: str) -> int:
                    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
                before, after = lorebook_entries(book, turns, count)
                entries = before + after
        use_profile = policy != "client" or not client_system
        use_client = policy != "profile"
        applied = policy if client_system else "profile"  # what the system prompt holds
        parts += before
        if use_profile:
            parts.append(character.system_prompt)
        parts += after
        if persona_name or persona_desc:
            parts.append(_persona_block(persona_name, persona_desc, language))
        if use_client:
            parts += client_system
    if character is None and (persona_name or persona_desc):
        parts.append(_persona_block(persona_name, persona_desc, language))
    parts = [p for p in parts if p.strip()]
    full = ([{"role": "system", "content": "\n\n".join(parts)}] if parts else []) + turns
    if not turns:
        raise RequestError("'messages' has no user or assistant message", "messages")
    cont = continues(full, body)
    if cont:
        text = tokenizer.apply_chat_template(full, tokenize=False, continue_final_message=True)
    else:
        text = tokenizer.apply_chat_template(full, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ChatPrompt(messages=full, prompt_ids=ids, policy=applied, continued=cont, lore_entries=entries)
