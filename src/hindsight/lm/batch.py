"""Rows from *different* prompts decoded together: the engine half of continuous batching.

A :class:`~hindsight.lm.base.DecodeState` holds rows that share one prompt. A server needs rows of many
prompts, of different lengths, that join at any step and leave when they finish (or their client goes away).
:class:`BatchDecoder` keeps them in one KV cache, left-padded to a common width: an attention mask hides the
padding, and every row carries its own position ids, so a row's log-probs are those of the same prompt
decoded alone (to float tolerance). Joining prompts are prefilled together in one padded forward; dropping
rows gathers the cache and trims columns that have become padding for every row.

Rows are named by stable integer ids (``add`` returns them), so callers never track shifting positions.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence

import torch
from transformers import DynamicCache

from hindsight.errors import HindsightError
from hindsight.lm.base import Counters
from hindsight.lm.hf import HFLanguageModel


class BatchDecoder:
    """A padded multi-prompt decoding batch over one :class:`HFLanguageModel` (used from one thread)."""

    def __init__(self, lm: HFLanguageModel) -> None:
        self.lm = lm
        self.ids: list[int] = []  # row id at each batch position
        self._next_id = 0
        self.cache = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=lm.device)  # [B, T]: 1 = real token
        self.lengths = torch.zeros(0, dtype=torch.long, device=lm.device)  # real tokens per row
        self.logprobs = torch.zeros((0, lm.vocab_size), device=lm.device)  # next-token log-probs [B, V]

    @property
    def size(self) -> int:
        return len(self.ids)

    def position(self, row: int) -> int:
        return self.ids.index(row)

    def rows_logprobs(self, rows: Sequence[int]) -> torch.Tensor:
        """``[len(rows), V]`` next-token log-probs of the named rows."""
        where = {r: i for i, r in enumerate(self.ids)}
        return self.logprobs[torch.tensor([where[r] for r in rows], device=self.lm.device)]

    # ---- joining ------------------------------------------------------------------------------------------
    def add(self, prompts: Sequence[Sequence[int]], copies: Sequence[int] | None = None) -> list[list[int]]:
        """Prefill ``prompts`` in one left-padded forward; prompt ``i`` becomes ``copies[i]`` rows.

        Returns the new row ids per prompt. Rows of one prompt share its prefill (its cache rows are copied).
        """
        copies = list(copies) if copies is not None else [1] * len(prompts)
        if len(copies) != len(prompts) or any(c < 1 for c in copies):
            raise HindsightError("add needs one positive row count per prompt.")
        seqs = [[int(t) for t in p] for p in prompts]
        if not seqs:
            return []
        if any(not s for s in seqs):
            raise HindsightError("The prompt is empty.")
        width = max(len(s) for s in seqs)
        if width >= self.lm.max_length:
            raise HindsightError(f"The prompt is {width} tokens; {self.lm.name} has a context of {self.lm.max_length}.")
        dev = self.lm.device
        ids = torch.full((len(seqs), width), self.lm.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[r, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        logits, _, cache = self.lm._forward(ids.to(dev), cache=DynamicCache(), attention_mask=mask.to(dev),
                                            position_ids=pos.to(dev))
        rep = torch.repeat_interleave(torch.arange(len(seqs)), torch.tensor(copies)).to(dev)
        new_cache = _map_layers(cache, lambda t: t.index_select(0, rep))
        lengths = torch.tensor([len(s) for s in seqs], device=dev)[rep]
        self._merge(new_cache, mask.to(dev)[rep], lengths, torch.log_softmax(logits[:, -1].float(), -1)[rep])
        out, k = [], self._next_id
        for c in copies:
            out.append(list(range(k, k + c)))
            k += c
        self._next_id = k
        self.ids.extend(r for group in out for r in group)
        return out

    def _merge(self, cache, mask: torch.Tensor, lengths: torch.Tensor, logprobs: torch.Tensor) -> None:
        if self.cache is None or not self.ids:
            self.cache, self.mask, self.lengths, self.logprobs = cache, mask, lengths, logprobs
            return
        width = max(self.mask.shape[1], mask.shape[1])
        old = _map_layers(self.cache, lambda t: _left_pad(t, width, dim=2))
        new = _map_layers(cache, lambda t: _left_pad(t, width, dim=2))
        self.cache = _cat_layers(old, new)
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask, width, dim=1)])
        self.lengths = torch.cat([self.lengths, lengths])
        self.logprobs = torch.cat([self.logprobs, logprobs])

    # ---- decoding -----------------------------------------------------------------------------------------
    def step(self, tokens: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Append one token per row (in ``ids`` order) in one forward; returns the new log-probs ``[B, V]``."""
        dev = self.lm.device
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=dev).reshape(-1)
        if tokens.shape[0] != self.size:
            raise HindsightError(f"step got {tokens.shape[0]} tokens for {self.size} rows.")
        if self.size == 0:
            return self.logprobs
        if int(self.lengths.max()) >= self.lm.max_length:
            raise HindsightError(f"A row reached {self.lm.name}'s context of {self.lm.max_length} tokens.")
        self.mask = torch.cat([self.mask, torch.ones((self.size, 1), dtype=torch.long, device=dev)], dim=1)
        logits, _, self.cache = self.lm._forward(tokens[:, None], cache=self.cache, attention_mask=self.mask,
                                                 position_ids=self.lengths[:, None])
        self.lengths = self.lengths + 1
        self.logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)
        return self.logprobs

    # ---- leaving ------------------------------------------------------------------------------------------
    def drop(self, rows: Sequence[int]) -> None:
        """Remove the named rows; columns that are padding for every remaining row are trimmed away."""
        gone = set(rows)
        keep = [i for i, r in enumerate(self.ids) if r not in gone]
        if len(keep) == self.size:
            return
        self.ids = [self.ids[i] for i in keep]
        if not keep:
            self.cache = None
            self.mask = self.mask[:0, :0]
            self.lengths, self.logprobs = self.lengths[:0], self.logprobs[:0]
            return
        idx = torch.tensor(keep, device=self.lm.device)
        mask = self.mask.index_select(0, idx)
        lead = int((mask.sum(0) == 0).long().cumprod(0).sum())  # leading all-padding columns
        self.mask = mask[:, lead:]
        self.cache = _map_layers(self.cache, lambda t: t.index_select(0, idx)[:, :, lead:])
        self.lengths = self.lengths.index_select(0, idx)
        self.logprobs = self.logprobs.index_select(0, idx)


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    extra = width - t.shape[dim]
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


def _plain_layers(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None or any(type(lay).__name__ != "DynamicLayer" for lay in layers):
        raise HindsightError("Batched decoding supports models with a plain (full-attention) KV cache only.")
    return layers


def _map_layers(cache, fn):
    """A new cache whose every layer's keys and values are ``fn(tensor)`` (the old cache stays valid)."""
    new = copy.copy(cache)
    new.layers = []
    for layer in _plain_layers(cache):
        lay = copy.copy(layer)
        if getattr(lay, "keys", None) is not None and lay.keys.numel() > 0:
            lay.keys, lay.values = fn(lay.keys), fn(lay.values)
        new.layers.append(lay)
    return new


def _cat_layers(a, b):
    """Rows of ``a`` then rows of ``b`` (same width) in one cache."""
    new = copy.copy(a)
    new.layers = []
    for la, lb in zip(_plain_layers(a), _plain_layers(b)):
        lay = copy.copy(la)
        lay.keys = torch.cat([la.keys, lb.keys])
        lay.values = torch.cat([la.values, lb.values])
        new.layers.append(lay)
    return new


class ThreadCounters:
    """``lm.counters`` seen per thread, so two threads decoding on one model each count their own work.

    Installed with :func:`per_thread_counters`; reads and ``+=`` go to the calling thread's :class:`Counters`.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_local", threading.local())

    def _mine(self) -> Counters:
        local = object.__getattribute__(self, "_local")
        if not hasattr(local, "c"):
            local.c = Counters()
        return local.c

    def __getattr__(self, name: str):
        return getattr(self._mine(), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._mine(), name, value)


def per_thread_counters(lm) -> None:
    """Make ``lm.counters`` per-thread (idempotent): a server's threads then report their own costs."""
    if not isinstance(lm.counters, ThreadCounters):
        lm.counters = ThreadCounters()
