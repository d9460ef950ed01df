"""KV-cache pieces of the serving engine: the prefix cache and the left-padded batch cache.

:class:`PrefixCache` keeps the keys and values of recent prompts (an LRU bounded in bytes) so
that a request whose prompt starts like an earlier one (the same character's rendered profile,
the earlier turns of the same chat) computes only the tokens after the shared prefix.
:class:`BatchCache` holds the running rows of the engine in one transformers ``DynamicCache``,
left-padded to a common width, and lets rows join and leave between decoding steps::

    from charops.serve.kvcache import PrefixCache
    cache = PrefixCache(max_bytes=256 << 20)
    n, kv = cache.lookup(prompt_ids)        # n tokens reusable; kv: per layer (keys, values)
    cache.insert(prompt_ids, kv_of_prompt)  # after the prompt's prefill

Keys and values are tensors ``[batch, kv_heads, tokens, head_dim]`` per layer, as transformers'
``DynamicLayer`` keeps them; the engine's caches use :class:`GrowingLayer`, a ``DynamicLayer``
that appends a decoding step's token in place instead of copying the whole cache. Prefix-cache
entries are exact-size copies, and a request starting from one gets its own buffer.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), [batch, heads, tokens, dim]
ROOM = 64  # tokens of headroom a cache buffer is allocated with


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in a buffer with room to grow.

    ``DynamicLayer.update`` concatenates, copying the whole cache at every decoding step;
    here a step writes its token into the buffer (doubling it when full), and ``keys`` /
    ``values`` are views of the filled part. Views handed out stay valid: a full buffer is
    replaced, never written over.
    """

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None, room: int = ROOM):
        super().__init__()
        self.room = room
        if keys is not None:
            self._fill(keys, values, room)

    def _fill(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        b, h, t, d = keys.shape
        self._k = keys.new_empty((b, h, t + room, d))
        self._v = values.new_empty((b, h, t + room, values.shape[-1]))
        self._k[:, :, :t] = keys
        self._v[:, :, :t] = values
        self._n = t
        self.keys, self.values = self._k[:, :, :t], self._v[:, :, :t]
        self.device, self.dtype, self.is_initialized = keys.device, keys.dtype, True

    @classmethod
    def adopt(cls, kbuf: torch.Tensor, vbuf: torch.Tensor, filled: int) -> GrowingLayer:
        """A layer over buffers whose first ``filled`` tokens hold the cache (no copy)."""
        layer = cls(room=ROOM)
        layer._k, layer._v, layer._n = kbuf, vbuf, filled
        layer.keys, layer.values = kbuf[:, :, :filled], vbuf[:, :, :filled]
        layer.device, layer.dtype, layer.is_initialized = kbuf.device, kbuf.dtype, True
        return layer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self._fill(key_states[:, :, :0], value_states[:, :, :0], self.room)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        t = key_states.shape[2]
        if self._n + t > self._k.shape[2]:
            self._fill(self.keys, self.values, max(self.room, self._n) + t)
        self._k[:, :, self._n:self._n + t] = key_states
        self._v[:, :, self._n:self._n + t] = value_states
        self._n += t
        self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]
        return self.keys, self.values


def kv_of(cache: DynamicCache) -> KV:
    """The per-layer (keys, values) of a ``DynamicCache`` (views: copy before keeping them)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def cache_from(kv: KV) -> DynamicCache:
    """A ``DynamicCache`` of :class:`GrowingLayer` starting from (a copy of) ``kv`` (may be empty)."""
    return _cache_of([GrowingLayer(k, v) for k, v in kv])


def _cache_of(layers: list[GrowingLayer]) -> DynamicCache:
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer  # layers made by update() grow in place too
    cache.layers = layers
    return cache


def kv_bytes(kv: KV) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    m = min(len(a), len(b))
    if m == 0:
        return 0
    diff = (a[:m] != b[:m]).nonzero()
    return m if len(diff) == 0 else int(diff[0])


class PrefixCache:
    """LRU of prompt KV caches, looked up by longest common token prefix.

    Each entry is one token sequence and its KV (batch 1). :meth:`lookup` finds the entry that
    shares the longest prefix with a new prompt; the KV of the first ``n`` tokens of any
    sequence depends only on those tokens (causal attention), so it can be reused as is.
    :meth:`insert` stores a finished prefill; an entry that the new prompt extends is replaced
    by it (a chat's next turn), and when the new prompt shares ``min_shared`` or more tokens
    with an entry but then differs (two users of one character), the shared part becomes an
    entry of its own: that one is hit by every later request of the character and stays in
    the LRU while one-off conversations age out. Memory is bounded by ``max_bytes`` (0: off).
    """

    def __init__(self, max_bytes: int, *, min_shared: int = 16):
        self.max_bytes = max_bytes
        self.min_shared = min_shared
        self._entries: collections.OrderedDict[int, tuple[torch.Tensor, KV, int]] = collections.OrderedDict()
        self._next = 0
        self.bytes = 0
        self.hits = 0
        self.lookups = 0
        self.hit_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _best(self, ids: torch.Tensor) -> tuple[int, int | None]:
        """(common prefix length, entry key) of the best match; ties go to the shortest entry."""
        best_n, best_key, best_len = 0, None, 0
        for key, (tokens, _, _) in self._entries.items():
            n = _common_prefix(tokens, ids)
            if n > best_n or (n == best_n and n > 0 and len(tokens) < best_len):
                best_n, best_key, best_len = n, key, len(tokens)
        return best_n, best_key

    def lookup(self, ids: Sequence[int], limit: int | None = None) -> tuple[int, KV]:
        """(n, kv): the KV of the first ``n`` tokens of ``ids`` (n <= limit), or (0, [])."""
        self.lookups += 1
        if not self._entries:
            return 0, []
        t = torch.as_tensor(list(ids), dtype=torch.long)
        n, key = self._best(t)
        if limit is not None:
            n = min(n, limit)
        if key is None or n <= 0:
            return 0, []
        self._entries.move_to_end(key)
        self.hits += 1
        self.hit_tokens += n
        _, kv, _ = self._entries[key]
        return n, [(k[:, :, :n], v[:, :, :n]) for k, v in kv]

    def insert(self, ids: Sequence[int], kv: KV) -> None:
        """Store a copy of the KV (batch 1, ``len(ids)`` tokens) of a prompt."""
        if self.max_bytes <= 0 or not kv:
            return
        kv = [(k.contiguous(), v.contiguous()) for k, v in kv]  # views of a larger buffer: copy
        t = torch.as_tensor(list(ids), dtype=torch.long)
        n, key = self._best(t)
        if key is not None:
            tokens = self._entries[key][0]
            if n == len(tokens):  # the new prompt extends (or equals) this entry: replace it
                self._drop(key)
            elif n >= self.min_shared and n < len(t):
                shared = [(k[:, :, :n].clone(), v[:, :, :n].clone()) for k, v in kv]
                self._add(t[:n].clone(), shared)
        self._add(t, kv)

    def _add(self, tokens: torch.Tensor, kv: KV) -> None:
        size = kv_bytes(kv)
        if size > self.max_bytes:
            return
        for key, (old, _, _) in list(self._entries.items()):
            if len(old) == len(tokens) and torch.equal(old, tokens):
                self._drop(key)
        self._entries[self._next] = (tokens, kv, size)
        self._next += 1
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        _, _, size = self._entries.pop(key)
        self.bytes -= size

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


class BatchCache:
    """The running rows' KV in one ``DynamicCache``, left-padded to a common width.

    ``mask`` is the attention mask ``[rows, width]`` (0 over each row's left padding). Rows
    join with their own batch-1 KV (:meth:`join`) and leave by index (:meth:`keep`); padding
    columns that no row needs any more are cut off, so the width is the longest row's.
    """

    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @property
    def width(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def join(self, kvs: list[KV]) -> None:
        """Append one row per ``kvs`` entry (each batch 1, its own length), in one copy."""
        lengths = [kv[0][0].shape[2] for kv in kvs]
        device = kvs[0][0][0].device
        old_rows, width = self.rows, max(self.width, *lengths)
        rows = old_rows + len(kvs)
        layers = []
        for i, (k0, v0) in enumerate(kvs[0]):
            keys = k0.new_zeros((rows, k0.shape[1], width + ROOM, k0.shape[3]))
            values = v0.new_zeros((rows, v0.shape[1], width + ROOM, v0.shape[3]))
            if old_rows:  # left padding: every row's last token sits in the last filled column
                ok, ov = self.cache.layers[i].keys, self.cache.layers[i].values
                keys[:old_rows, :, width - ok.shape[2]:width] = ok
                values[:old_rows, :, width - ov.shape[2]:width] = ov
            for r, (kv, length) in enumerate(zip(kvs, lengths, strict=True)):
                keys[old_rows + r, :, width - length:width] = kv[i][0][0]
                values[old_rows + r, :, width - length:width] = kv[i][1][0]
            layers.append(GrowingLayer.adopt(keys, values, width))
        mask = torch.zeros((rows, width), dtype=torch.long, device=device)
        if old_rows:
            mask[:old_rows, width - self.width:] = self.mask
        for r, length in enumerate(lengths):
            mask[old_rows + r, width - length:] = 1
        self.mask = mask
        self.cache = _cache_of(layers)

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices`` (in that order); drop padding no row needs."""
        if not indices:
            self.cache, self.mask = None, None
            return
        if indices == list(range(self.rows)):
            return
        idx = torch.tensor(indices, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, idx)
        start = int(mask.any(0).nonzero()[0])
        self.mask = mask[:, start:]
        self.cache = _cache_of([GrowingLayer.adopt(layer._k.index_select(0, idx)[:, :, start:],
                                                   layer._v.index_select(0, idx)[:, :, start:], layer._n - start)
                                for layer in self.cache.layers])
