"""Structured output and logit bias for the local server: OpenAI's ``response_format``
(``json_object``, ``json_schema``) through llguidance, and ``logit_bias``.

Each is a per-row logits processor, the engine's ``GenRequest.logits_processor``:
``processor(seq, scores) -> scores``, called before every sampled token of one reply with the
row's prompt plus reply tokens (1-D) and its float32 logits (changed in place). A grammar keeps one llguidance matcher per reply (so
``n`` candidates each follow the schema on their own) and masks every token the grammar does not
allow next; once the JSON is complete only the end of turn is allowed::

    from charops.serve.structured import Structured
    s = Structured(tokenizer, eos_ids=[im_end_id])
    grammar = s.grammar_for({"response_format": {"type": "json_object"}})   # None: no grammar
    processor = s.processor(grammar, None, prompt_len=len(prompt_ids))        # one per reply

Why llguidance (measured in ``bench/structured_output.py``): a Rust wheel with no dependencies
(xgrammar pulls triton and requires torch; outlines-core builds an index per schema and
vocabulary up front), JSON schema compiled lazily per token, and a mask in tens of
microseconds on CPU; vLLM, SGLang and llama.cpp ship it as a backend.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


JSON_OPTIONS = {"whitespace_flexible": False}


class RequestError(Exception):
    """A request field this module cannot honour (the server answers 400 with ``param``)."""

    def __init__(self, message: str, param: str, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


def response_format_schema(body: dict) -> dict | None:
    """The JSON schema ``response_format`` asks for (``{"type": "object"}`` for ``json_object``),
    or None for ``text`` / no field. RequestError for anything else."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise RequestError("'response_format' must be an object with a 'type' "
                           "(text, json_object or json_schema)", "response_format")
    kind = fmt["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise RequestError("'response_format.json_schema' must be an object with a 'name' and a "
                               "'schema'", "response_format.json_schema")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise RequestError("'response_format.json_schema.schema' must be a JSON schema object",
                               "response_format.json_schema.schema")
        return schema
    raise RequestError(f"'response_format.type' is '{kind}'; this server supports text, json_object "
                       "and json_schema", "response_format.type")


def parse_logit_bias(body: dict, vocab_size: int) -> dict[int, float] | None:
    """``logit_bias`` (token id as a string -> bias in [-100, 100]) checked against the vocabulary."""
    bias = body.get("logit_bias")
    if bias is None or bias == {}:
        return None
    if not isinstance(bias, dict):
        raise RequestError("'logit_bias' must be an object mapping token ids to numbers in [-100, 100]",
                           "logit_bias")
    out: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise RequestError(f"'logit_bias' key '{key}' is not a token id", "logit_bias") from None
        if not 0 <= token < vocab_size:
            raise RequestError(f"'logit_bias' token id {token} is outside this model's vocabulary "
                               f"(0 to {vocab_size - 1})", "logit_bias")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise RequestError(f"'logit_bias' value for token {token} must be a number in [-100, 100]",
                               "logit_bias")
        out[token] = float(value)
    return out


class _GrammarRow:
    """One reply's grammar state: consumes the reply's new tokens, masks the next step."""

    def __init__(self, matcher: Any, vocab: int, prompt_len: int):
        self.matcher, self.vocab, self.consumed = matcher, vocab, prompt_len

    def __call__(self, seq: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        m = self.matcher
        for token in seq[self.consumed:].tolist():
            m.consume_token(token)  # a token the mask allowed; a failure shows as is_error below
        self.consumed = seq.shape[0]
        if m.is_error():
            raise RuntimeError(f"structured output: {m.get_error()}")
        bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = torch.from_numpy(bits[: min(self.vocab, logits.shape[-1])].astype(bool))
        n = allowed.shape[0]
        logits[:n].masked_fill_(~allowed.to(logits.device), float("-inf"))
        logits[n:] = float("-inf")
        return logits


class _Chain:
    def __init__(self, parts: list[LogitsProcessor]):
        self.parts = parts

    def __call__(self, seq: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        for p in self.parts:
            logits = p(seq, logits)
        return logits


class _Bias:
    def __init__(self, bias: dict[int, float]):
        self.ids = torch.tensor(list(bias), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def __call__(self, seq: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        ids = self.ids.to(logits.device)
        logits[ids] += self.values.to(logits.device, logits.dtype)
        return logits


class Structured:
    """The server's grammar compiler: the llguidance tokenizer is built once (lazily) and
    compiled grammars are kept by schema text (LRU of ``cache_size``)."""

    def __init__(self, tokenizer: Any, eos_ids: list[int], cache_size: int = 64):
        self.tokenizer, self.eos_ids, self.cache_size = tokenizer, list(eos_ids), cache_size
        self._lltok = None
        self._grammars: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def lltokenizer(self):
        if self._lltok is None:
            import llguidance.hf

            self._lltok = llguidance.hf.from_tokenizer(self.tokenizer, eos_token=self.eos_ids)
        return self._lltok

    def grammar_for(self, body: dict) -> str | None:
        """The checked llguidance grammar of the request's ``response_format`` (None: free text)."""
        schema = response_format_schema(body)
        if schema is None:
            return None
        from llguidance import LLMatcher

        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            if key in self._grammars:
                self._grammars[key] = self._grammars.pop(key)  # most recently used last
                return self._grammars[key]
        try:
            # Compact JSON unless the schema's x-guidance says otherwise: with free whitespace a
            # weak model can pad until max_tokens and never close the object.
            grammar = LLMatcher.grammar_from_json_schema(key, defaults=JSON_OPTIONS)
            error = LLMatcher.validate_grammar(grammar, self.lltokenizer)
        except ValueError as exc:
            error = str(exc)
        if error and not error.startswith("WARNING"):
            raise RequestError(f"'response_format' schema is not usable: {error.splitlines()[0]}",
                               "response_format", code="invalid_json_schema")
        with self._lock:
            self._grammars[key] = grammar
            while len(self._grammars) > self.cache_size:
                self._grammars.pop(next(iter(self._grammars)))
        return grammar

    def processor(self, grammar: str | None, logit_bias: dict[int, float] | None,
                  prompt_len: int) -> LogitsProcessor | None:
        """A fresh per-reply processor (None when the request needs none). The bias is applied
        first, so the grammar's mask has the last word."""
        parts: list[LogitsProcessor] = []
        if logit_bias:
            parts.append(_Bias(logit_bias))
        if grammar is not None:
            from llguidance import LLMatcher

            lltok = self.lltokenizer
            parts.append(_GrammarRow(LLMatcher(lltok, grammar, log_level=0), lltok.vocab_size, prompt_len))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else _Chain(parts)
