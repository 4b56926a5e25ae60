"""Rows of *different* prompts in one KV cache: what lets many searches share one forward.

A :class:`~hindsight.lm.base.DecodeState` holds rows that share one prompt, so every row has the same length.
:class:`Rows` drops that: rows are left-padded to a common width, and a mask marks which cache columns are
real. Appending tokens of different counts per row leaves masked holes; positions count only real columns, so
a row computes what it would compute alone (up to float rounding of the padded batch).

Kept apart from ``hf.py`` on purpose (a small, separate layer over the backend's forward and cache): it needs
the backend's ``_forward`` and a cache with ``layers[i].keys/values`` shaped ``[n, heads, L, d]``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.lm.base import DecodeState, LanguageModel


@dataclass
class Rows:
    """``n`` rows, each with its own prefix. ``mask[i, j]`` is True where row ``i`` has a real token in column
    ``j``; ``logprobs[i]`` is the next-token distribution after row ``i``'s last real token."""

    cache: Any
    mask: torch.Tensor  # [n, L] bool
    logprobs: torch.Tensor  # [n, V]
    extra: dict[int, torch.Tensor] = field(default_factory=dict)  # see append(also_after=...)

    @property
    def n(self) -> int:
        return int(self.mask.shape[0])

    def lengths(self) -> torch.Tensor:
        """Real tokens per row."""
        return self.mask.sum(dim=1)


def _map_layers(cache: Any, fn) -> Any:
    """A shallow copy of ``cache`` whose layers' keys and values are ``fn(tensor)``."""
    new = copy.copy(cache)
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise HindsightError("This model's KV cache type does not support multi-prompt batches.")
    new.layers = []
    for layer in layers:
        lay = copy.copy(layer)
        if getattr(lay, "keys", None) is not None and lay.keys.numel() > 0:
            lay.keys, lay.values = fn(lay.keys), fn(lay.values)
        new.layers.append(lay)
    return new


def supported(lm: LanguageModel) -> bool:
    """Whether ``lm`` can run rows of different prompts in one forward (the transformers backend can)."""
    return getattr(lm, "_forward", None) is not None


def _broadcast(t: torch.Tensor, n: int) -> torch.Tensor:
    """A cache tensor with one row (a shared prefix) seen as ``n`` rows."""
    return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and n > 1 else t


def from_state(state: DecodeState) -> Rows:
    """The rows of a shared-prompt state (no copy in the per-row layout; a shared prefix is written out per row)."""
    from hindsight.lm.cascade import per_row

    mask = torch.ones((state.n, state.length), dtype=torch.bool, device=state.logprobs.device)
    return Rows(cache=per_row(state.cache), mask=mask, logprobs=state.logprobs)


def repeat(rows: Rows, n: int) -> Rows:
    """A one-row group seen as ``n`` identical rows (no copy until it is joined or appended to)."""
    if rows.n != 1:
        raise HindsightError("repeat needs a single row.")
    return Rows(cache=rows.cache, mask=rows.mask.expand(n, -1), logprobs=rows.logprobs.expand(n, -1))


def take(rows: Rows, idx: Sequence[int] | torch.Tensor) -> Rows:
    """Rows ``idx`` (reorder, copy or drop), with columns no kept row uses dropped."""
    idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    if idx.numel() == 0:
        raise HindsightError("take needs at least one row.")
    dev = rows.mask.device
    mask = rows.mask[idx.to(dev)]
    cols = mask.any(dim=0).nonzero().squeeze(1)
    keep_all = int(cols.numel()) == mask.shape[1]
    mask = mask if keep_all else mask[:, cols]

    def pick(t: torch.Tensor) -> torch.Tensor:
        t = _broadcast(t, rows.n).index_select(0, idx.to(t.device))
        return t if keep_all else t.index_select(2, cols.to(t.device))

    return Rows(cache=_map_layers(rows.cache, pick), mask=mask, logprobs=rows.logprobs[idx.to(rows.logprobs.device)])


def join(parts: Sequence[Rows]) -> Rows:
    """All rows of ``parts`` in order, left-padded to the widest."""
    if not parts:
        raise HindsightError("join needs at least one group of rows.")
    if len(parts) == 1:
        return parts[0]
    width = max(p.mask.shape[1] for p in parts)
    masks = [torch.cat([torch.zeros((p.n, width - p.mask.shape[1]), dtype=torch.bool, device=p.mask.device),
                        p.mask], dim=1) for p in parts]
    per_layer = [getattr(p.cache, "layers", None) for p in parts]
    if any(layers is None for layers in per_layer):
        raise HindsightError("This model's KV cache type does not support multi-prompt batches.")
    new = copy.copy(parts[0].cache)
    new.layers = []
    for li, layer in enumerate(per_layer[0]):
        lay = copy.copy(layer)
        ks, vs = [], []
        for p, layers in zip(parts, per_layer):
            k, v = layers[li].keys, layers[li].values
            pad = width - k.shape[2]
            if pad:
                z = torch.zeros((k.shape[0], k.shape[1], pad, k.shape[3]), dtype=k.dtype, device=k.device)
                k, v = torch.cat([z, k], dim=2), torch.cat([z, v], dim=2)
            ks.append(_broadcast(k, p.n))
            vs.append(_broadcast(v, p.n))
        lay.keys, lay.values = torch.cat(ks), torch.cat(vs)
        new.layers.append(lay)
    return Rows(cache=new, mask=torch.cat(masks), logprobs=torch.cat([p.logprobs for p in parts]))


def append(lm: LanguageModel, rows: Rows, tokens: Sequence[Sequence[int]],
           also_after: dict[int, int] | None = None) -> Rows:
    """Append ``tokens[i]`` (any count, possibly none) to row ``i`` in one forward; returns the new rows.

    A row given no tokens keeps its distribution. The input rows stay valid (the cache is not shared).
    ``also_after`` ({row: k}) asks for the distribution after that row's first ``k`` new tokens as well; they
    are returned in the new rows' ``extra`` ({row: [V] log-probs}), for :func:`truncate`.
    """
    if len(tokens) != rows.n:
        raise HindsightError(f"append got token lists for {len(tokens)} rows, the batch has {rows.n}.")
    width = max((len(t) for t in tokens), default=0)
    if width == 0:
        return rows
    forward = getattr(lm, "_forward", None)
    if forward is None:
        raise HindsightError(f"Model {lm.name} does not support multi-prompt batches.")
    longest = int(rows.lengths().max()) + width
    if longest > lm.max_length:
        raise HindsightError(f"A sequence of {longest} tokens exceeds {lm.name}'s context of {lm.max_length}.")
    dev = lm.device
    ids = torch.full((rows.n, width), lm.pad_token_id, dtype=torch.long)
    new_mask = torch.zeros((rows.n, width), dtype=torch.bool)
    for i, t in enumerate(tokens):
        if t:
            ids[i, : len(t)] = torch.tensor([int(x) for x in t], dtype=torch.long)
            new_mask[i, : len(t)] = True
    new_mask = new_mask.to(rows.mask.device)
    pos = (rows.lengths()[:, None] + new_mask.long().cumsum(dim=1) - 1).clamp_min(0)
    mask = torch.cat([rows.mask, new_mask], dim=1)
    # the forward replaces each layer's tensors: new layer objects keep the input rows valid
    cache = _map_layers(rows.cache, lambda t: _broadcast(t, rows.n))
    logits, hidden, cache = forward(ids.to(dev), cache=cache, attention_mask=mask.long().to(dev),
                                    position_ids=pos.to(dev))
    counts = torch.tensor([len(t) for t in tokens], dtype=torch.long)
    logprobs = rows.logprobs.clone(memory_format=torch.contiguous_format)
    # the forward already applied the LM head to the last column: rows that end there reuse it
    full = (counts == width).nonzero().squeeze(1)
    if full.numel():
        logprobs[full.to(logprobs.device)] = torch.log_softmax(logits[full.to(logits.device), -1].float(), dim=-1).to(
            logprobs.device, logprobs.dtype)
    short = ((counts > 0) & (counts < width)).nonzero().squeeze(1)
    if short.numel():
        last = hidden[short.to(hidden.device), (counts[short] - 1).to(hidden.device)]
        logprobs[short.to(logprobs.device)] = lm.logprobs_from_hidden(last).to(logprobs.device, logprobs.dtype)
    extra = {r: lm.logprobs_from_hidden(hidden[r, k - 1]).to(logprobs.device, logprobs.dtype)
             for r, k in (also_after or {}).items() if k > 0}
    return Rows(cache=cache, mask=mask, logprobs=logprobs, extra=extra)


def truncate(row: Rows, keep: int, logprobs: torch.Tensor) -> Rows:
    """A single row cut back to its first ``keep`` real tokens; ``logprobs`` is the distribution after them."""
    if row.n != 1:
        raise HindsightError("truncate needs a single row.")
    cols = row.mask[0].nonzero().squeeze(1)[:keep]
    return Rows(cache=_map_layers(row.cache, lambda t: t.index_select(2, cols.to(t.device))),
                mask=torch.ones((1, int(cols.numel())), dtype=torch.bool, device=row.mask.device),
                logprobs=logprobs.reshape(1, -1))


@dataclass
class Columns:
    """Keys and values of a few consecutive positions of one row (``[1, H, c, d]`` per layer): what a search keeps
    of tokens it has already fed, so that a later forward over the same positions can reuse them. ``after``: the
    next-token log-probs after the last of them, where known."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    after: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0

    @property
    def nbytes(self) -> int:
        tensors = [*self.keys, *self.values] + ([self.after] if self.after is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def slice(self, start: int, stop: int) -> Columns:
        """Positions ``start:stop`` of these (views, no copy)."""
        return Columns([k[:, :, start:stop] for k in self.keys], [v[:, :, start:stop] for v in self.values])

    def then(self, more: Columns) -> Columns:
        """These positions followed by ``more``'s."""
        return Columns([torch.cat([a, b], dim=2) for a, b in zip(self.keys, more.keys)],
                       [torch.cat([a, b], dim=2) for a, b in zip(self.values, more.values)])


def columns(rows: Rows, row: int, count: int) -> Columns:
    """The keys and values of the last ``count`` real tokens of row ``row`` (a copy)."""
    layers = getattr(rows.cache, "layers", None)
    if layers is None:
        raise HindsightError("This model's KV cache type does not support multi-prompt batches.")
    if not count:
        return Columns([], [])
    cols = rows.mask[row].nonzero().squeeze(1)[-count:]
    ks, vs = [], []
    for layer in layers:
        r = row if layer.keys.shape[0] > 1 else 0
        c = cols.to(layer.keys.device)
        ks.append(layer.keys[r: r + 1].index_select(2, c))
        vs.append(layer.values[r: r + 1].index_select(2, c))
    return Columns(ks, vs)


def extend(row: Rows, parts: Sequence[Columns]) -> Rows:
    """A single row with ``parts`` appended after its real tokens, as if they had been fed (no forward).

    Its next-token distribution is the last part's ``after`` where known; else it keeps ``row``'s, which is
    stale: feed at least one token before reading it."""
    if row.n != 1:
        raise HindsightError("extend needs a single row.")
    parts = [p for p in parts if p.n]
    if not parts:
        return row
    if not bool(row.mask.all()):
        row = truncate(row, int(row.lengths()[0]), row.logprobs)
    new = copy.copy(row.cache)
    new.layers = []
    for li, layer in enumerate(row.cache.layers):
        lay = copy.copy(layer)
        lay.keys = torch.cat([layer.keys] + [p.keys[li].to(layer.keys.device) for p in parts], dim=2)
        lay.values = torch.cat([layer.values] + [p.values[li].to(layer.values.device) for p in parts], dim=2)
        new.layers.append(lay)
    width = row.mask.shape[1] + sum(p.n for p in parts)
    after = parts[-1].after
    return Rows(cache=new, mask=torch.ones((1, width), dtype=torch.bool, device=row.mask.device),
                logprobs=row.logprobs if after is None else after.reshape(1, -1).to(row.logprobs))


def generate_many(lm: LanguageModel, prompts: Sequence[Sequence[int]], max_tokens: int, *, top_k: int = 0,
                  seed: int = 0) -> list[list[int]]:
    """One sampled completion per prompt, all decoded together: each equals ``lm.generate`` of that prompt alone
    with the same seed (its own generator, one draw per token), up to float rounding of the padded batch."""
    from hindsight.lm.sampling import sample_next

    gens = []
    for _ in prompts:
        g = torch.Generator(device="cpu")
        g.manual_seed(seed)
        gens.append(g)
    rows = join([from_state(lm.start(list(p), 1)) for p in prompts])
    out: list[list[int]] = [[] for _ in prompts]
    live = list(range(len(prompts)))  # prompt index of each row
    for _ in range(max_tokens):
        toks = [int(sample_next(rows.logprobs[r][None], top_k=top_k, generator=gens[i])[0]) for r, i in enumerate(live)]
        for i, t in zip(live, toks):
            out[i].append(t)
        keep = [r for r, t in enumerate(toks) if t not in lm.eos_token_ids and len(out[live[r]]) < max_tokens]
        if not keep:
            break
        rows = append(lm, take(rows, keep) if len(keep) < len(live) else rows, [[toks[r]] for r in keep])
        live = [live[r] for r in keep]
    return out
