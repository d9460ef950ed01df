"""The ChatML chat template of charops' embedded base model.

ChatML (``<|im_start|>role\\n...<|im_end|>\\n``) is what Qwen2 and most open chat models use, so
a charops dataset and a Qwen2-family model render dialogues the same way. Two things are
specific to charops:

- each assistant message's content *and* its ``<|im_end|>`` are wrapped in
  ``{% generation %}...{% endgeneration %}``: transformers reports those character spans
  (``return_assistant_tokens_mask``) and TRL's ``assistant_only_loss`` refuses a template
  without them. The end-of-turn token is inside the span because the model must learn to stop.
- a user turn with a ``name`` (several people in one scene) is rendered ``name：content`` so
  the character can tell speakers apart; the full-width colon matches the Chinese data.

    from charops.model.chat_template import CHATML_TEMPLATE
    tok.apply_chat_template(messages, chat_template=CHATML_TEMPLATE, tokenize=False)
"""

from __future__ import annotations

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
# Order fixes the ids: <|endoftext|> is 0 (pad and document separator), then the ChatML pair.
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)
NAME_SEPARATOR = "："

# Whitespace control (`{%-`/`-%}`) keeps the template's own layout out of the rendered text:
# every character of the output comes from a quoted string or a message field.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message.role == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{{- message.content + '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message.role + '\\n' -}}"
    "{%- if message.role == 'user' and message.name is defined and message.name -%}"
    "{{- message.name + '" + NAME_SEPARATOR + "' -}}"
    "{%- endif -%}"
    "{{- message.content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def render_chatml_with_spans(messages: list[dict], add_generation_prompt: bool = False
                             ) -> tuple[str, list[tuple[int, int]]]:
    """CHATML_TEMPLATE's rendering in plain Python (no Jinja: data prepare renders every dialogue
    this way, and the tests hold it to the template), plus the (start, end) character span of each
    assistant content + <|im_end|>: the text ``{% generation %}`` marks."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in messages:
        if m["role"] == "assistant":
            head = f"{IM_START}assistant\n"
            body = f"{m['content']}{IM_END}"
            spans.append((pos + len(head), pos + len(head) + len(body)))
            piece = f"{head}{body}\n"
        else:
            prefix = f"{m['name']}{NAME_SEPARATOR}" if m["role"] == "user" and m.get("name") else ""
            piece = f"{IM_START}{m['role']}\n{prefix}{m['content']}{IM_END}\n"
        parts.append(piece)
        pos += len(piece)
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts), spans
