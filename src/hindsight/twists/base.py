"""The twist interface: ``log psi_t(s_<t, s)`` for every next token ``s`` of every row of a decoding state.

A twist looks ahead: ``psi_t(s_1..t)`` should be proportional to ``E[phi | s_1..t]``. The twisted sampler only
calls :meth:`Twist.log_psi`, so a learned head (which reads ``state.hidden``) and an exact table (which reads
``state.tokens``, for tests on the enumerable toy model) are interchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

from hindsight.lm.base import DecodeState


@runtime_checkable
class Twist(Protocol):
    def log_psi(self, state: DecodeState) -> torch.Tensor:
        """``[n, V]`` log twist values for appending each vocabulary token to each row (rows that are done:
        anything finite, it is ignored)."""


class TableTwist:
    """A twist given as a table ``{(s_1, ..., s_t): log psi_t}`` over token prefixes (missing: ``default``)."""

    def __init__(self, table: Mapping[tuple[int, ...], float], vocab_size: int, default: float = -math.inf):
        self.table = dict(table)
        self.vocab_size = vocab_size
        self.default = default

    def log_psi(self, state: DecodeState) -> torch.Tensor:
        out = torch.zeros((state.n, self.vocab_size), dtype=torch.float64)
        rows = state.tokens.cpu().tolist()
        done = state.done.cpu().tolist()
        for i, prefix in enumerate(rows):
            if done[i]:
                continue
            key = tuple(prefix)
            out[i] = torch.tensor([self.table.get((*key, s), self.default) for s in range(self.vocab_size)],
                                  dtype=torch.float64)
        return out
