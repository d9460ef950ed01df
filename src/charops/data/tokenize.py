"""Tokenization and label masks: chat messages -> ``input_ids`` + ``labels``; documents -> packed blocks.

SFT labels are the input ids on exactly the tokens of each assistant turn (its content and the
end-of-turn token the chat template puts inside ``{% generation %}``) and ``-100`` everywhere
else, so the loss is ``L_SFT = -1/n sum_i log P(y_i | x, y_<i)`` over responses only. Which
characters are assistant text is decided by the model's own chat template: any Hugging Face
template with generation markers works, and the tokens are found from the character offsets
the tokenizer reports (the same rule as transformers' ``return_assistant_tokens_mask``: a token
overlapping an assistant span is supervised).

It is built for speed: every text is rendered first, then tokenized in one ``encode_batch``
call of the Rust tokenizer (threads, no per-example Python tokenization). For charops' own
ChatML template the rendering is done in plain Python (charops.model.chat_template.render_chatml_with_spans,
held to the Jinja template by the tests) instead of Jinja.

    from charops.data.tokenize import ChatEncoder
    enc = ChatEncoder(tokenizer)
    [(ids, labels)] = enc.encode([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]])

    python -m pytest tests/unit/test_tokenize.py -q
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence

from charops.errors import CharopsError
from charops.model.chat_template import CHATML_TEMPLATE, ENDOFTEXT, render_chatml_with_spans

IGNORE_INDEX = -100
_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
Messages = list[dict]


def _labels_by_offsets(ids: list[int], offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """The reference rule: a token is supervised when its character range overlaps a span."""
    ends = [e for _, e in spans]
    labels = []
    for t, (start, end) in zip(ids, offsets, strict=True):
        j = bisect_right(ends, start)  # first span ending after this token starts
        labels.append(t if j < len(spans) and spans[j][0] < end and start < end else IGNORE_INDEX)
    return labels


def _labels(enc, spans: list[tuple[int, int]]) -> list[int]:
    """Labels for one encoding: ids inside the spans, -100 elsewhere.

    Same rule as :func:`_labels_by_offsets` but touching only the tokens at span edges
    (``char_to_token``/``token_to_chars`` are O(1) lookups in Rust), instead of materialising
    every token's offsets in Python: the difference is most of prepare's own time.
    """
    ids = enc.ids
    n = len(ids)
    labels = [IGNORE_INDEX] * n
    for start, end in spans:
        if end <= start:
            continue
        a, b = enc.char_to_token(start), enc.char_to_token(end - 1)
        if a is None or b is None:  # an edge character no token covers (e.g. a normalizer dropped it)
            return _labels_by_offsets(ids, enc.offsets, spans)
        # Several tokens can share a character (byte-level pieces of one CJK character).
        while a > 0 and enc.token_to_chars(a - 1)[1] > start:
            a -= 1
        while b + 1 < n and enc.token_to_chars(b + 1)[0] < end:
            b += 1
        labels[a:b + 1] = ids[a:b + 1]
    return labels


class ChatEncoder:
    """Render chats with a tokenizer's chat template and tokenize them with assistant labels."""

    def __init__(self, tokenizer, last_turn_only: bool = False):
        template = tokenizer.chat_template
        if isinstance(template, dict):  # named variants: the default one renders plain chats
            template = template.get("default")
        if not template:
            raise CharopsError(f"tokenizer of '{tokenizer.name_or_path}' has no chat template")
        if not _GENERATION.search(template):
            raise CharopsError(
                f"the chat template of '{tokenizer.name_or_path}' has no {{% generation %}} markers, so the "
                "assistant tokens cannot be found; wrap each assistant message (and its end-of-turn token) in "
                "{% generation %}...{% endgeneration %}")
        self.tokenizer = tokenizer
        # A private copy without truncation or padding: some tokenizer.json files ship with
        # truncation on, which would cut dialogues silently instead of rejecting them.
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.template = template
        self.fast_chatml = template == CHATML_TEMPLATE
        self.last_turn_only = last_turn_only
        self.template_kwargs = dict(tokenizer.special_tokens_map)

    def render(self, chats: Sequence[Messages], add_generation_prompt: bool = False
               ) -> tuple[list[str], list[list[tuple[int, int]]]]:
        """Texts and, per text, the character spans of assistant turns (template order)."""
        if self.fast_chatml:
            pairs = [render_chatml_with_spans(m, add_generation_prompt) for m in chats]
            return [t for t, _ in pairs], [s for _, s in pairs]
        from transformers.utils.chat_template_utils import render_jinja_template

        # Keys with None values are dropped, as apply_chat_template does: templates test presence.
        clean = [[{k: v for k, v in m.items() if v is not None} for m in chat] for chat in chats]
        texts, spans = render_jinja_template(
            conversations=clean, chat_template=self.template, return_assistant_tokens_mask=True,
            add_generation_prompt=add_generation_prompt, **self.template_kwargs)
        return texts, [sorted(s) for s in spans]

    def encode_texts(self, texts: list[str]):
        """One batched call of the Rust tokenizer (no special tokens added: the template has them)."""
        return self.backend.encode_batch(texts, add_special_tokens=False)

    def encode(self, chats: Sequence[Messages]) -> list[tuple[list[int], list[int]]]:
        """(input_ids, labels) per chat; labels are -100 outside the supervised assistant turns."""
        texts, spans = self.render(chats)
        return self.label(self.encode_texts(texts), spans)

    def label(self, encodings, spans: list[list[tuple[int, int]]]) -> list[tuple[list[int], list[int]]]:
        out = []
        for enc, sp in zip(encodings, spans, strict=True):
            if self.last_turn_only:
                sp = sp[-1:]
            out.append((enc.ids, _labels(enc, sp)))
        return out

    def count_tokens(self, chats: Sequence[Messages], add_generation_prompt: bool = False) -> list[int]:
        texts, _ = self.render(chats, add_generation_prompt)
        return [len(e.ids) for e in self.encode_texts(texts)]


def document_separator_id(tokenizer) -> int:
    """Token ending each pretraining document: <|endoftext|> where the vocabulary has it, else eos."""
    vocab = tokenizer.get_vocab()
    if ENDOFTEXT in vocab:
        return vocab[ENDOFTEXT]
    if tokenizer.eos_token_id is None:
        raise CharopsError(f"tokenizer of '{tokenizer.name_or_path}' has neither <|endoftext|> nor an eos token "
                           "to separate pretraining documents")
    return tokenizer.eos_token_id


def pack_documents(docs: Sequence[list[int]], block_size: int, separator_id: int, pad_id: int) -> list[dict]:
    """Concatenate documents (each + separator) and cut the stream into blocks of ``block_size``.

    ``position_ids`` restart at 0 at every document start *and* at every block start: a document
    longer than what is left of a block is split, and its continuation in the next block is a new
    chunk starting at position 0 (attention never crosses a block, so continuing positions would
    only claim context the model cannot see; and position-based packed attention in transformers
    and flash-attention find sequence starts where the position is 0). No token is dropped: the
    last block is filled with ``pad_id`` as a segment of its own, with labels -100.

    Returns rows ``{input_ids, position_ids, labels}`` (labels equal input_ids except padding).
    """
    if block_size < 2:
        raise CharopsError(f"block_size must be at least 2, got {block_size}")
    ids: list[int] = []
    pos: list[int] = []
    for doc in docs:
        tokens = list(doc) + [separator_id]
        at = 0
        while at < len(tokens):
            room = block_size - len(ids) % block_size
            chunk = tokens[at:at + room]
            ids.extend(chunk)
            pos.extend(range(len(chunk)))
            at += len(chunk)
    n_real = len(ids)
    tail = -n_real % block_size
    ids.extend([pad_id] * tail)
    pos.extend(range(tail))
    rows = []
    for b in range(0, len(ids), block_size):
        block = ids[b:b + block_size]
        real = max(0, min(block_size, n_real - b))
        rows.append({"input_ids": block, "position_ids": pos[b:b + block_size],
                     "labels": block[:real] + [IGNORE_INDEX] * (block_size - real)})
    return rows
