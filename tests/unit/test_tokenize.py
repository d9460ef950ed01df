"""Label masks and packing: supervised tokens decode to exactly the assistant turns.

    .venv/bin/python -m pytest tests/unit/test_tokenize.py -x -q
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charops.data.tokenize import (
    IGNORE_INDEX,
    ChatEncoder,
    _labels,
    _labels_by_offsets,
    document_separator_id,
    pack_documents,
)
from charops.errors import CharopsError
from charops.model.load import load_tokenizer

SYSTEM = {"role": "system", "content": "你是小明，一个爱看书的学生。说话温柔。"}
CHATS = [
    [SYSTEM,
     {"role": "user", "content": "你好呀！今天忙吗？"},
     {"role": "assistant", "content": "（微笑）还好，在看书呢。"},
     {"role": "user", "content": "What book?"},
     {"role": "assistant", "content": "A history book, 很有意思 (curious)."},
     {"role": "user", "content": "推荐给我吧"},
     {"role": "assistant", "content": "好呀，下次带给你！\n  有空一起看。"}],
    [SYSTEM,
     {"role": "user", "content": "大家好", "name": "小红"},
     {"role": "assistant", "content": "小红好！"},
     {"role": "user", "content": "Hi all", "name": "Tom"},
     {"role": "user", "content": "我也来了", "name": "阿强"},
     {"role": "assistant", "content": " Tom, 阿强, welcome!  "}],
]


@pytest.fixture(scope="module")
def tok(micro_model_dir):
    return load_tokenizer(micro_model_dir)


def _supervised_runs(ids, labels, tok):
    runs, cur = [], []
    for t, lab in zip(ids, labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == t
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def _assistant_texts(chat):
    return [m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant"]


def test_every_assistant_turn_is_supervised_and_nothing_else(tok):
    enc = ChatEncoder(tok)
    for chat, (ids, labels) in zip(CHATS, enc.encode(CHATS), strict=True):
        assert len(ids) == len(labels)
        assert _supervised_runs(ids, labels, tok) == _assistant_texts(chat)
        # and the whole sequence is the template's rendering, token for token
        assert ids == tok.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]


def test_last_turn_only(tok):
    enc = ChatEncoder(tok, last_turn_only=True)
    for chat, (ids, labels) in zip(CHATS, enc.encode(CHATS), strict=True):
        assert _supervised_runs(ids, labels, tok) == _assistant_texts(chat)[-1:]


def test_names_are_rendered_but_not_supervised(tok):
    enc = ChatEncoder(tok)
    [(ids, labels)] = enc.encode(CHATS[1:])
    text = tok.decode(ids)
    assert "小红：大家好" in text and "Tom：Hi all" in text and "阿强：我也来了" in text
    supervised = "".join(_supervised_runs(ids, labels, tok))
    assert "小红" not in supervised.replace("小红好", "") and "：" not in supervised


def test_fast_chatml_path_equals_jinja_and_transformers(tok):
    fast = ChatEncoder(tok)
    assert fast.fast_chatml
    slow = ChatEncoder(tok)
    slow.fast_chatml = False  # force the general Jinja path on the same template
    assert fast.render(CHATS) == slow.render(CHATS)
    assert fast.encode(CHATS) == slow.encode(CHATS)
    for chat, (_ids, labels) in zip(CHATS, fast.encode(CHATS), strict=True):
        ref = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        assert [lab != IGNORE_INDEX for lab in labels] == [bool(m) for m in ref["assistant_masks"]]
    assert fast.render(CHATS, add_generation_prompt=True) == slow.render(CHATS, add_generation_prompt=True)


def test_any_template_with_generation_markers(tok):
    # A non-ChatML layout: plain-text headers, end-of-turn token inside the generation block.
    tok2 = tok.__class__.from_pretrained(tok.name_or_path)
    tok2.chat_template = (
        "{% for m in messages %}### {{ m.role }}{% if m.name is defined %} ({{ m.name }}){% endif %}:\n"
        "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{{ eos_token }}{% endgeneration %}"
        "{% else %}{{ m.content }}{% endif %}\n\n{% endfor %}")
    enc = ChatEncoder(tok2)
    assert not enc.fast_chatml
    for chat, (ids, labels) in zip(CHATS, enc.encode(CHATS), strict=True):
        assert _supervised_runs(ids, labels, tok2) == _assistant_texts(chat)
        assert tok2.decode(ids).startswith("### system:\n你是小明")


def test_template_without_markers_is_refused(tok):
    tok2 = tok.__class__.from_pretrained(tok.name_or_path)
    tok2.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    with pytest.raises(CharopsError, match="no \\{% generation %\\} markers"):
        ChatEncoder(tok2)


def test_count_tokens_matches_encode(tok):
    enc = ChatEncoder(tok)
    assert enc.count_tokens(CHATS) == [len(ids) for ids, _ in enc.encode(CHATS)]
    prompt = [CHATS[0][:2]]
    [n] = enc.count_tokens(prompt, add_generation_prompt=True)
    assert n == len(tok.apply_chat_template(prompt[0], add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"])


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="ab 你好（）\n.!é<|im_end|>", min_size=1, max_size=60),
       cuts=st.lists(st.integers(0, 60), min_size=0, max_size=6))
def test_edge_lookup_labels_equal_the_overlap_rule(micro_model_dir, text, cuts):
    # Random spans over random text (CJK bytes split across tokens, special tokens, spaces):
    # the fast edge lookup must give what checking every token's offsets gives.
    tok = load_tokenizer(micro_model_dir)  # cached by transformers after the first call
    pts = sorted({min(c, len(text)) for c in cuts})
    spans = [(pts[i], pts[i + 1]) for i in range(0, len(pts) - 1, 2)]
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    assert _labels(enc, spans) == _labels_by_offsets(enc.ids, enc.offsets, spans)


def test_document_separator_is_endoftext(tok):
    assert tok.convert_ids_to_tokens(document_separator_id(tok)) == "<|endoftext|>"


def test_pack_hand_example_exact_fit():
    rows = pack_documents([[1, 2, 3], [4, 5, 6, 7, 8], [9]], block_size=4, separator_id=0, pad_id=99)
    assert [r["input_ids"] for r in rows] == [[1, 2, 3, 0], [4, 5, 6, 7], [8, 0, 9, 0]]
    assert [r["position_ids"] for r in rows] == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 0, 1]]
    assert [r["labels"] for r in rows] == [r["input_ids"] for r in rows]


def test_pack_hand_example_with_padding():
    rows = pack_documents([[1, 2, 3], [4, 5, 6, 7, 8], [9]], block_size=5, separator_id=0, pad_id=99)
    assert [r["input_ids"] for r in rows] == [[1, 2, 3, 0, 4], [5, 6, 7, 8, 0], [9, 0, 99, 99, 99]]
    assert [r["position_ids"] for r in rows] == [[0, 1, 2, 3, 0], [0, 1, 2, 3, 4], [0, 1, 0, 1, 2]]
    assert rows[2]["labels"] == [9, 0, -100, -100, -100]


@settings(max_examples=200, deadline=None)
@given(docs=st.lists(st.lists(st.integers(1, 50), min_size=0, max_size=30), min_size=0, max_size=12),
       block=st.integers(2, 17))
def test_pack_loses_nothing_and_restarts_positions(docs, block):
    rows = pack_documents(docs, block_size=block, separator_id=0, pad_id=-1)
    assert all(len(r["input_ids"]) == len(r["position_ids"]) == len(r["labels"]) == block for r in rows)
    stream = [t for r in rows for t in r["labels"] if t != IGNORE_INDEX]
    assert stream == [t for d in docs for t in d + [0]]  # every token, in order, once
    assert sum(t == -1 for r in rows for t in r["input_ids"]) < block  # padding only fills the last block
    # positions: 0 at each document start and each block start, else previous + 1
    starts, at = set(), 0
    for d in docs:
        starts.add(at)
        at += len(d) + 1
    flat_pos = [p for r in rows for p in r["position_ids"]]
    for i in range(at):
        expected_zero = i in starts or i % block == 0
        assert (flat_pos[i] == 0) if expected_zero else (flat_pos[i] == flat_pos[i - 1] + 1)


def test_pack_rejects_tiny_blocks():
    with pytest.raises(CharopsError, match="block_size"):
        pack_documents([[1]], block_size=1, separator_id=0, pad_id=0)


def test_truncation_in_tokenizer_file_is_ignored(tok):
    # Long dialogues must be counted and rejected by prepare, never cut by the tokenizer.
    tok2 = tok.__class__.from_pretrained(tok.name_or_path)
    tok2.backend_tokenizer.enable_truncation(max_length=5)
    [(ids, labels)] = ChatEncoder(tok2).encode(CHATS[:1])
    [(ref, _)] = ChatEncoder(tok).encode(CHATS[:1])
    assert ids == ref and len(ids) > 5
