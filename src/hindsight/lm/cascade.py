"""Shared-prefix ("cascade") attention: one copy of a common prefix's keys/values, per-row suffixes apart.

Every sampler fans one prompt out into ``n`` rows. transformers' ``DynamicCache`` concatenates new keys onto
the (broadcast) prompt keys at the first step, which materialises ``n`` copies of the prompt. Here each layer
keeps the prefix once (``[1, H, P, d]``) and the rows' own tokens separately (``[n, H, S, d]``). Attention is
computed over each part on its own (the prefix part as one matmul with the rows folded into the query
dimension, so the prefix keys are read once, not ``n`` times) and the two partial softmaxes are merged
exactly with their log-sum-exps.

It plugs into transformers through its attention-function registry: models covered by this module are
switched to the ``hindsight_cascade`` implementation, which behaves exactly as ``sdpa`` unless a
:class:`SharedPrefixCache` is passed to the forward (as ``shared_prefix=``).
"""

from __future__ import annotations

import copy

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from hindsight.errors import HindsightError

IMPLEMENTATION = "hindsight_cascade"
# model types whose attention modules go through the registry with [B, H, L, d] tensors and ``cache.update``,
# and whose equality with the per-row layout is tested (tests/lm/test_cascade.py)
COVERED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "gemma3_text", "gemma2"})
KV_LAYOUTS = ("shared", "per-row")
FOLD_MIN_TOKENS = 16  # fold a common suffix prefix into the shared part once all rows agree on this many


def covers(model) -> bool:
    """Whether the shared layout is exact for this model (else the engine keeps one cache row per row)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(cfg, "model_type", None) in COVERED_MODEL_TYPES and hasattr(model, "set_attn_implementation")


def choose_layout(model, layout: str) -> str:
    """The layout a model will use: ``shared`` falls back to ``per-row`` for model types not covered."""
    if layout not in KV_LAYOUTS:
        raise HindsightError(f"kv_layout must be one of {', '.join(KV_LAYOUTS)} (got {layout!r}).")
    if layout == "shared" and not covers(model):
        return "per-row"
    if layout == "shared":
        try:
            install(model)
        except (ValueError, NotImplementedError):  # a model that refuses registered attention functions
            return "per-row"
    return layout


def install(model) -> None:
    """Register the attention function once and switch ``model`` to it (plain forwards stay ``sdpa``)."""
    if IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPLEMENTATION, cascade_attention)
        AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
    model.set_attn_implementation(IMPLEMENTATION)


SUFFIX_BLOCK = 16  # suffix buffers are allocated in whole blocks of this many positions


def capacity(size: int) -> int:
    """Positions to allocate when a suffix buffer must hold ``size``: an eighth more, rounded up to a block.

    Appending into spare room instead of ``torch.cat`` keeps a decode step from copying every row's history and
    from leaving a trail of slightly smaller freed blocks behind (which the allocator cannot reuse, so the
    process's peak memory grew with every step). Growing by at least a block and by an eighth bounds both the
    copies (amortised O(1) per token) and the unused room (< 1/8 + one block)."""
    return -(-(size + size // 8) // SUFFIX_BLOCK) * SUFFIX_BLOCK


def _buffer(like: torch.Tensor, n: int, size: int) -> torch.Tensor:
    """An uninitialised ``[n, H, capacity(size), d]`` buffer for ``size`` positions of ``like``'s rows."""
    return like.new_empty((n, like.shape[1], capacity(size), like.shape[3]))


class SharedPrefixLayer(CacheLayerMixin):
    """One layer: ``shared_keys/values`` ``[1, H, P, d]`` and the rows' own ``keys/values`` ``[n, H, S, d]``.

    The rows' own part lives in buffers with spare positions (``keys``/``values`` are views of their first
    ``S`` positions) that ``update`` writes into in place. No two layers ever share a buffer: ``take``,
    ``fold`` and ``from_prefix`` always allocate new ones, so an in-place append cannot change another state.
    """

    is_sliding = False

    def __init__(self, shared_keys: torch.Tensor, shared_values: torch.Tensor, key_buffer: torch.Tensor,
                 value_buffer: torch.Tensor, size: int) -> None:
        super().__init__()
        self.shared_keys, self.shared_values = shared_keys, shared_values
        self._kbuf, self._vbuf, self.size = key_buffer, value_buffer, size
        self.keys, self.values = key_buffer[:, :, :size], value_buffer[:, :, :size]
        self.device = key_buffer.device
        self.is_initialized = True

    @classmethod
    def gathered(cls, layer: SharedPrefixLayer, idx: torch.Tensor) -> SharedPrefixLayer:
        """Rows ``idx`` of ``layer``'s own part, copied once straight into new buffers (with spare room)."""
        n, size = idx.numel(), layer.size
        kbuf, vbuf = _buffer(layer.keys, n, size), _buffer(layer.values, n, size)
        torch.index_select(layer.keys, 0, idx, out=kbuf[:, :, :size])
        torch.index_select(layer.values, 0, idx, out=vbuf[:, :, :size])
        return cls(layer.shared_keys, layer.shared_values, kbuf, vbuf, size)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        """Append the new tokens to the rows' own part; the attention function reads the shared part itself."""
        size, need = self.size, self.size + key_states.shape[-2]
        if need > self._kbuf.shape[-2]:  # out of room: one copy into a bigger buffer
            kbuf, vbuf = _buffer(self._kbuf, self._kbuf.shape[0], need), _buffer(self._vbuf, self._vbuf.shape[0], need)
            kbuf[:, :, :size] = self.keys
            vbuf[:, :, :size] = self.values
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[:, :, size:need] = key_states
        self._vbuf[:, :, size:need] = value_states
        self.size = need
        self.keys, self.values = self._kbuf[:, :, :need], self._vbuf[:, :, :need]
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return int(self.shared_keys.shape[-2] + self.size)

    def get_max_length(self) -> int:
        return -1

    def nbytes(self) -> int:
        """Bytes held, spare room included (the shared part counted in full, although other states share it)."""
        return sum(t.numel() * t.element_size() for t in (self.shared_keys, self.shared_values, self._kbuf,
                                                           self._vbuf))


class SharedPrefixCache(Cache):
    """A cache whose layers hold one shared prefix and ``n`` per-row suffixes (see the module docstring)."""

    def __init__(self, layers: list[SharedPrefixLayer]) -> None:
        super().__init__(layers=layers)

    @classmethod
    def from_prefix(cls, keys: list[torch.Tensor], values: list[torch.Tensor], n: int) -> SharedPrefixCache:
        """``n`` rows with no tokens of their own after a one-row prefix (per-layer ``[1, H, P, d]`` tensors)."""
        return cls([SharedPrefixLayer(k, v, _buffer(k, n, 0), _buffer(v, n, 0), 0) for k, v in zip(keys, values)])

    @property
    def shared_length(self) -> int:
        return int(self.layers[0].shared_keys.shape[-2])

    @property
    def suffix_length(self) -> int:
        return int(self.layers[0].size)

    def take(self, idx: torch.Tensor) -> SharedPrefixCache:
        """Rows ``idx`` (reorder, duplicate, drop): only the suffixes are gathered; the prefix is shared."""
        idx = idx.to(self.layers[0].keys.device)
        return SharedPrefixCache([SharedPrefixLayer.gathered(lay, idx) for lay in self.layers])

    def fold(self, k: int) -> SharedPrefixCache:
        """Move the first ``k`` suffix positions (identical in every row) into the shared part."""
        layers = []
        for lay in self.layers:
            n, rest = lay.keys.shape[0], lay.size - k
            kbuf, vbuf = _buffer(lay.keys, n, rest), _buffer(lay.values, n, rest)
            kbuf[:, :, :rest] = lay.keys[:, :, k:]
            vbuf[:, :, :rest] = lay.values[:, :, k:]
            layers.append(SharedPrefixLayer(torch.cat([lay.shared_keys, lay.keys[:1, :, :k]], dim=-2),
                                            torch.cat([lay.shared_values, lay.values[:1, :, :k]], dim=-2),
                                            kbuf, vbuf, rest))
        return SharedPrefixCache(layers)

    def prefix_of_row(self, row: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer ``[1, H, P + S, d]`` keys and values of one row: the whole history as a new prefix."""
        keys, values = [], []
        for lay in self.layers:
            if lay.size == 0:
                keys.append(lay.shared_keys)
                values.append(lay.shared_values)
            else:
                keys.append(torch.cat([lay.shared_keys, lay.keys[row: row + 1]], dim=-2))
                values.append(torch.cat([lay.shared_values, lay.values[row: row + 1]], dim=-2))
        return keys, values

    def nbytes(self) -> int:
        return sum(lay.nbytes() for lay in self.layers)


def common_prefix_length(tokens: torch.Tensor) -> int:
    """How many leading columns of ``tokens`` ``[n, t]`` are the same in every row."""
    if tokens.shape[1] == 0:
        return 0
    same = (tokens == tokens[:1]).all(dim=0).long()
    return int(same.cumprod(0).sum())


def fold_common(cache, tokens: torch.Tensor):
    """``cache`` with the appended tokens all its rows now agree on (``tokens`` ``[n, t]``, after a ``select``)
    moved into the shared part, once there are at least ``FOLD_MIN_TOKENS`` of them; other caches pass."""
    if not isinstance(cache, SharedPrefixCache) or tokens.shape[0] < 2:
        return cache
    folded = tokens.shape[1] - cache.suffix_length  # appended tokens already in the shared part
    common = common_prefix_length(tokens[:, folded:])
    return cache.fold(common) if common >= FOLD_MIN_TOKENS else cache


def _softmax_part(scores: torch.Tensor, mask: torch.Tensor | None, softcap: float | None):
    """Normalised weights and log-sum-exp of one part; a fully masked row gives weights 0 and lse = -inf."""
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(scores - m)
    total = p.sum(dim=-1, keepdim=True)
    return p / total.clamp_min(torch.finfo(total.dtype).tiny), m + torch.log(total)


def two_part_attention(query: torch.Tensor, shared_k: torch.Tensor, shared_v: torch.Tensor, keys: torch.Tensor,
                       values: torch.Tensor, mask: torch.Tensor | None, scale: float,
                       softcap: float | None = None) -> torch.Tensor:
    """Attention of ``query`` ``[n, Hq, L, d]`` over a shared prefix and per-row keys, exactly merged.

    ``mask`` (optional, bool ``[n or 1, 1, L, P + S]``, True = attend) is the model's own mask over the whole
    history; without one the prefix is fully visible and the rows' part is causal (queries are its last L).
    Computed in float32 whatever the model's dtype. Returns ``[n, Hq, L, dv]``.
    """
    n, hq, length, d = query.shape
    hkv, p_len, s_len, dv = shared_k.shape[1], shared_k.shape[2], keys.shape[2], values.shape[-1]
    g = hq // hkv
    q = query.float() * scale
    if mask is None and length > 1:
        cols = torch.arange(s_len, device=query.device)
        rows = torch.arange(length, device=query.device) + (s_len - length)
        mask = torch.cat([torch.ones(length, p_len, dtype=torch.bool, device=query.device),
                          cols[None, :] <= rows[:, None]], dim=1)[None, None]
    m1 = m2 = None
    if mask is not None:
        m1 = mask[:, 0, :, :p_len][None, :, None]  # [1, n|1, 1, L, P] against [hkv, n, g, L, P]
        m2 = mask[:, :, None, :, p_len:]  # [n|1, 1, 1, L, S] against [n, hkv, g, L, S]
    # prefix part: rows folded into the query dimension, one matmul per kv head over one copy of the prefix
    qs = q.reshape(n, hkv, g, length, d).transpose(0, 1).reshape(hkv, n * g * length, d)
    s1 = torch.matmul(qs, shared_k[0].float().transpose(-1, -2)).view(hkv, n, g, length, p_len)
    w1, lse1 = _softmax_part(s1, m1, softcap)
    o1 = torch.matmul(w1.view(hkv, n * g * length, p_len), shared_v[0].float()).view(hkv, n, g, length, dv)
    o1, lse1 = o1.transpose(0, 1), lse1.transpose(0, 1)  # [n, hkv, g, L, .]
    # the rows' own part
    s2 = torch.matmul(q.reshape(n, hkv, g * length, d), keys.float().transpose(-1, -2)).view(n, hkv, g, length, s_len)
    w2, lse2 = _softmax_part(s2, m2, softcap)
    o2 = torch.matmul(w2.view(n, hkv, g * length, s_len), values.float()).view(n, hkv, g, length, dv)
    lse = torch.logaddexp(lse1, lse2)
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = o1 * torch.exp(lse1 - lse) + o2 * torch.exp(lse2 - lse)
    return out.reshape(n, hq, length, dv).to(query.dtype)


def cascade_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """The registered attention function: two-part attention when a :class:`SharedPrefixCache` is in use."""
    cache = kwargs.get("shared_prefix")
    if cache is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    layer = cache.layers[module.layer_idx]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    mask = attention_mask
    if mask is not None and mask.dtype != torch.bool:  # an additive float mask: 0 = attend
        mask = mask == 0
    if mask is not None and mask.shape[-1] != layer.get_seq_length():
        raise RuntimeError("the attention mask does not span the shared prefix and the rows' own tokens")
    out = two_part_attention(query, layer.shared_keys, layer.shared_values, key, value, mask, scale,
                             kwargs.get("softcap"))
    return out.transpose(1, 2).contiguous(), None


# ---- both layouts: row gathers and broadcasts of a decoding state's cache -----------------------------------
def _layers(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise HindsightError("This model's KV cache type is not supported by the decoding engine.")
    return layers


def take_rows(cache, idx: torch.Tensor):
    """A new cache holding rows ``idx`` (the old cache stays valid); a shared prefix is not copied."""
    if isinstance(cache, SharedPrefixCache):
        return cache.take(idx)
    new = copy.copy(cache)
    new.layers = []
    for layer in _layers(cache):
        lay = copy.copy(layer)
        if getattr(lay, "keys", None) is not None and lay.keys.numel() > 0:
            lay.keys = lay.keys.index_select(0, idx.to(lay.keys.device))
            lay.values = lay.values.index_select(0, idx.to(lay.values.device))
        new.layers.append(lay)
    return new


def expand_rows(cache, n: int):
    """The per-row layout: the same one-row cache seen as ``n`` identical rows, without copying (a view).

    transformers concatenates onto these views at the next forward, which is what materialises ``n`` copies."""
    new = copy.copy(cache)
    new.layers = []
    for layer in _layers(cache):
        lay = copy.copy(layer)
        if getattr(lay, "keys", None) is not None and lay.keys.numel() > 0:
            lay.keys = lay.keys.expand(n, *lay.keys.shape[1:])
            lay.values = lay.values.expand(n, *lay.values.shape[1:])
        new.layers.append(lay)
    return new


def prefix_tensors(cache) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer ``[1, H, P, d]`` keys and values of row 0 of either layout (what a new prefix starts from)."""
    if isinstance(cache, SharedPrefixCache):
        return cache.prefix_of_row(0)
    layers = _layers(cache)
    return [lay.keys[:1] for lay in layers], [lay.values[:1] for lay in layers]


def per_row(cache):
    """The same rows in the per-row layout (each row holds its whole history): for code that manipulates cache
    rows of different prompts directly (``lm/ragged.py``). A per-row cache is returned as it is."""
    if not isinstance(cache, SharedPrefixCache):
        return cache
    from transformers import DynamicCache

    new = DynamicCache()
    for i, lay in enumerate(cache.layers):
        n = lay.keys.shape[0]
        new.update(torch.cat([lay.shared_keys.expand(n, -1, -1, -1), lay.keys], dim=-2),
                   torch.cat([lay.shared_values.expand(n, -1, -1, -1), lay.values], dim=-2), i)
    return new
