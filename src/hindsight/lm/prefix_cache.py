"""Prefilled prefixes kept across calls: a small LRU keyed by token ids, bounded in megabytes.

A repeated system prompt, RAIN's few-shot evaluation prefix or a query scored against many passages is then
prefilled once per process: ``start`` reuses the longest stored prefix of its prompt and prefills only the rest.
Entries are immutable (decoding states share their tensors, nothing writes into them).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import torch

DEFAULT_MB = 256.0
MIN_TOKENS = 16  # shorter prefixes are cheap to prefill again; storing them would only churn the LRU


@dataclass(frozen=True)
class Prefill:
    """One prefilled prefix: per-layer ``[1, H, P, d]`` keys/values and the distribution after it."""

    ids: tuple[int, ...]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    logprobs: torch.Tensor  # [1, V]
    hidden: torch.Tensor  # [1, d]

    @property
    def nbytes(self) -> int:
        tensors = [*self.keys, *self.values, self.logprobs, self.hidden]
        return sum(t.numel() * t.element_size() for t in tensors)


class PrefixLRU:
    """Least-recently-used store of :class:`Prefill` entries, at most ``max_mb`` megabytes in all."""

    def __init__(self, max_mb: float | None = None) -> None:
        if max_mb is None:
            max_mb = float(os.environ.get("HINDSIGHT_PREFIX_CACHE_MB", DEFAULT_MB))
        self.max_bytes = int(max_mb * 2**20)
        self.entries: OrderedDict[tuple[int, ...], Prefill] = OrderedDict()
        self.bytes = 0

    def lookup(self, ids: tuple[int, ...]) -> Prefill | None:
        """The longest stored prefix of ``ids`` (the whole of ``ids`` included), marked as recently used."""
        best: Prefill | None = None
        for key, entry in self.entries.items():
            if len(key) <= len(ids) and (best is None or len(key) > len(best.ids)) and ids[: len(key)] == key:
                best = entry
        if best is not None:
            self.entries.move_to_end(best.ids)
        return best

    def put(self, entry: Prefill) -> None:
        """Store ``entry`` unless it is too short or bigger than the whole budget; evict the oldest to fit."""
        size = entry.nbytes
        if len(entry.ids) < MIN_TOKENS or size > self.max_bytes or entry.ids in self.entries:
            return
        self.entries[entry.ids] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.nbytes

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0
