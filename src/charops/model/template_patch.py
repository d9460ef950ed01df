"""Give an imported model's chat template the ``{% generation %}`` markers charops trains with.

Supervised (response-only) training needs to know which characters of a rendered chat are the
assistant's: transformers reports them for the spans inside ``{% generation %}`` ...
``{% endgeneration %}``, and charops' tokenizer turns those spans into labels. Templates that
models ship rarely carry the markers, so ``charops model import`` patches the two families it
can patch *safely*:

- **ChatML** (``<|im_start|>role\\n...<|im_end|>``: SmolLM2, Qwen2, ...), including a default
  system prompt the template injects when a chat has none;
- **Llama-3 style** headers (``<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>``).

"Safely" is checked, not assumed: the patched template must render the probe chats below to the
*same text* as the model's own template (only the markers are new), and the supervised tokens
must decode to exactly each assistant reply plus its end-of-turn token (:func:`check_assistant_mask`).
Anything else is refused with a message pointing at ``--chat-template FILE``.

    from charops.model.template_patch import patch_chat_template
    patched, family = patch_chat_template(tokenizer.chat_template, bos_token=tokenizer.bos_token)
"""

from __future__ import annotations

import json
import re

from charops.errors import CharopsError
from charops.model.chat_template import CHATML_TEMPLATE

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")

# Probe chats: system or not, one or two replies, with and without a generation prompt. Plain
# ASCII so that no template-specific escaping or normalisation can hide a difference.
_SYSTEM = {"role": "system", "content": "You are Theo, a jazz pianist."}
_TURNS = [
    {"role": "user", "content": "Evening, Theo."},
    {"role": "assistant", "content": "(smiles) Evening, friend. Pull up a chair."},
    {"role": "user", "content": "What are you playing?"},
    {"role": "assistant", "content": "(plays a chord) Something slow. Let it breathe."},
]
PROBES: list[tuple[list[dict], bool]] = [
    ([_SYSTEM, *_TURNS], False),
    (_TURNS[:2], False),
    ([_SYSTEM, _TURNS[0]], True),
    ([_TURNS[0]], True),
]

_LLAMA3_BODY = (
    "{%- for message in messages -%}"
    "{%- if message.role == 'assistant' -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- generation -%}"
    "{{- message.content | trim + '<|eot_id|>' -}}"
    "{%- endgeneration -%}"
    "{%- else -%}"
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- endif -%}"
)


def has_generation_markers(template: str) -> bool:
    return bool(_GENERATION.search(template))


def render(template: str, messages: list[dict], add_generation_prompt: bool, **special_tokens) -> str:
    """One chat rendered by a template exactly as ``apply_chat_template(tokenize=False)`` would."""
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        texts, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                         add_generation_prompt=add_generation_prompt, **special_tokens)
    except Exception as exc:  # a Jinja syntax or runtime error in a template the user gave us
        raise CharopsError(f"chat template does not render: {type(exc).__name__}: {exc}") from None
    return texts[0]


def _default_system(template: str, head: str, tail: str, **special_tokens) -> str | None:
    """The system prompt a template adds to a chat that has none (SmolLM2's "You are SmolLM..."), or None."""
    text = render(template, [_TURNS[0]], False, **special_tokens)
    start = f"{head}system\n"
    if not text.startswith(start):
        return None
    end = text.find(tail, len(start))
    return text[len(start):end] if end >= 0 else None


def _chatml(template: str, **special_tokens) -> str:
    default = _default_system(template, "<|im_start|>", "<|im_end|>", **special_tokens)
    if default is None:
        return CHATML_TEMPLATE
    # json.dumps gives a double-quoted string with escapes that Jinja's lexer reads back as-is.
    literal = json.dumps(f"<|im_start|>system\n{default}<|im_end|>\n", ensure_ascii=False)
    return ("{%- if messages and messages[0].role != 'system' -%}"
            "{{- " + literal + " -}}"
            "{%- endif -%}" + CHATML_TEMPLATE)


def _llama3(template: str, **special_tokens) -> str:
    bos = special_tokens.get("bos_token")
    starts_with_bos = bool(bos) and render(template, [_TURNS[0]], False, **special_tokens).startswith(bos)
    return ("{{- bos_token -}}" if starts_with_bos else "") + _LLAMA3_BODY


_FAMILIES = {"chatml": ("<|im_start|>", _chatml), "llama3": ("<|start_header_id|>", _llama3)}


def patch_chat_template(template: str | None, **special_tokens) -> tuple[str, str]:
    """``(template with generation markers, family)``; CharopsError when it cannot be done safely.

    ``special_tokens`` are what the template may refer to (``bos_token``, ``eos_token``, ...).
    A template that already has markers is returned unchanged (family ``"as-is"``).
    """
    if not template:
        raise CharopsError("the model has no chat template; pass one with --chat-template FILE "
                           "(Jinja, assistant content and end-of-turn token inside "
                           "{% generation %}...{% endgeneration %})")
    if has_generation_markers(template):
        return template, "as-is"
    for family, (marker, build) in _FAMILIES.items():
        if marker in template:
            patched = build(template, **special_tokens)
            _check_same_rendering(template, patched, family, **special_tokens)
            return patched, family
    raise CharopsError("the model's chat template is neither ChatML nor Llama-3 style, so charops cannot "
                       "add {% generation %} markers safely; pass a template that has them with "
                       "--chat-template FILE")


def _check_same_rendering(original: str, patched: str, family: str, **special_tokens) -> None:
    for messages, gen_prompt in PROBES:
        want = render(original, messages, gen_prompt, **special_tokens)
        got = render(patched, messages, gen_prompt, **special_tokens)
        if want != got:
            at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
            raise CharopsError(
                f"the model's chat template looks like {family} but renders differently from charops' "
                f"{family} template with generation markers (first difference at character {at}: "
                f"{want[at:at + 30]!r} vs {got[at:at + 30]!r}); pass a template with "
                "{% generation %} markers with --chat-template FILE")


def check_assistant_mask(tokenizer) -> str:
    """Check that the supervised tokens of a probe chat decode to each reply plus end-of-turn.

    The same rule charops' tests hold the embedded model to: every assistant turn is one
    contiguous supervised run, and that run is the reply's text followed by one special token
    (the model must learn to stop). Returns that end-of-turn token.
    """
    from charops.data.tokenize import IGNORE_INDEX, ChatEncoder

    messages = PROBES[0][0]
    [(ids, labels)] = ChatEncoder(tokenizer).encode([messages])
    runs: list[list[int]] = []
    for i, (t, lab) in enumerate(zip(ids, labels, strict=True)):
        if lab == IGNORE_INDEX:
            continue
        if runs and labels[i - 1] != IGNORE_INDEX:
            runs[-1].append(t)
        else:
            runs.append([t])
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    specials = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
    if len(runs) != len(replies):
        raise CharopsError(f"chat template check: {len(runs)} supervised spans for {len(replies)} assistant "
                           "turns; the {% generation %} markers must wrap each assistant message")
    ends = set()
    for run, reply in zip(runs, replies, strict=True):
        text = tokenizer.decode(run, skip_special_tokens=False)
        end = text[len(reply):]
        if not text.startswith(reply) or end not in specials:
            raise CharopsError(f"chat template check: a supervised span decodes to {text!r}, expected "
                               f"{reply!r} followed by the end-of-turn token; put the assistant content "
                               "and its end-of-turn token (nothing else) inside {% generation %}")
        ends.add(end)
    return ends.pop()
