"""The potential interface: batched ``log phi`` over completions, composable by product and tempering.

A completion is given both as text and as token ids (samplers have both at hand), so a classifier can read the
text and an LM-based potential can read the ids without re-tokenising. Values are float64 log-space; ``-inf``
means phi = 0. A NaN is never passed on: it raises an error that names the potential.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from hindsight.errors import HindsightError


class Potential(ABC):
    """``phi(x) >= 0`` over completions, evaluated in batches as ``log phi``."""

    name: str = "potential"

    @abstractmethod
    def _log_phi(self, texts: Sequence[str], tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        """Backend of :meth:`log_phi`; may assume both lists have the same length."""

    def log_phi(self, texts: Sequence[str], tokens: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """``log phi`` for each completion, shape ``[len(texts)]``, float64 (finite or ``-inf``)."""
        texts = list(texts)
        toks = [list(t) for t in tokens] if tokens is not None else [[] for _ in texts]
        if len(toks) != len(texts):
            raise HindsightError(f"Potential {self.name}: {len(texts)} texts but {len(toks)} token lists.")
        if not texts:
            return torch.zeros(0, dtype=torch.float64)
        out = torch.as_tensor(self._log_phi(texts, toks), dtype=torch.float64).reshape(-1).cpu()
        if out.shape[0] != len(texts):
            raise HindsightError(f"Potential {self.name} returned {out.shape[0]} values for {len(texts)} inputs.")
        if bool(torch.isnan(out).any()) or bool((out == float("inf")).any()):
            raise HindsightError(f"Potential {self.name} returned NaN or +inf for some input.")
        return out

    def __mul__(self, other: Potential) -> Potential:
        return Product([self, other])

    def __pow__(self, beta: float) -> Potential:
        return Tempered(self, beta)


class Product(Potential):
    """``phi(x) = prod_i phi_i(x)``: the sum of the parts' log values."""

    def __init__(self, parts: Sequence[Potential]) -> None:
        flat: list[Potential] = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, Product) else [p])
        self.parts = flat
        self.name = " * ".join(p.name for p in flat)

    def _log_phi(self, texts, tokens):
        return sum(p.log_phi(texts, tokens) for p in self.parts)


class Tempered(Potential):
    """``phi(x) ** beta`` (beta >= 0): sharpens (beta > 1) or flattens (beta < 1) a potential."""

    def __init__(self, base: Potential, beta: float) -> None:
        if not beta >= 0:
            raise HindsightError(f"A tempering exponent must be non-negative (got {beta}).")
        self.base, self.beta = base, float(beta)
        self.name = f"{base.name}^{beta:g}"

    def _log_phi(self, texts, tokens):
        lp = self.base.log_phi(texts, tokens)
        if self.beta == 0:
            return torch.where(torch.isinf(lp), lp, torch.zeros_like(lp))  # support is kept: 0^0 stays 0
        return self.beta * lp
