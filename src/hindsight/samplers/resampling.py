"""Resampling schemes: given normalised weights ``w`` (float64, ``[N]``), pick ``N`` ancestor indices.

Every scheme is unbiased: the expected number of copies of particle ``i`` is ``N * w[i]``. They differ in
variance: multinomial is the noisiest; stratified, systematic and residual keep the counts close to ``N * w``.
Indices come back sorted, so an identity draw is easy to spot (and costs the caller no KV-cache copy).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hindsight.errors import HindsightError

Scheme = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _from_uniforms(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Invert the weights' CDF at sorted points ``u`` in [0, 1)."""
    cdf = torch.cumsum(w, 0)
    cdf[-1] = 1.0  # guard against rounding so every u finds a particle
    return torch.searchsorted(cdf, u, right=True).clamp_max(w.shape[0] - 1)


def multinomial(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    n = w.shape[0]
    u = torch.rand(n, generator=generator, dtype=torch.float64).sort().values
    return _from_uniforms(w, u)


def stratified(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    n = w.shape[0]
    u = (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)) / n
    return _from_uniforms(w, u)


def systematic(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    n = w.shape[0]
    u = (torch.arange(n, dtype=torch.float64) + torch.rand(1, generator=generator, dtype=torch.float64)) / n
    return _from_uniforms(w, u)


def residual(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """floor(N w_i) copies each, the remaining slots drawn multinomially from the leftover weights."""
    n = w.shape[0]
    copies = torch.floor(n * w).long()
    left = n - int(copies.sum())
    if left > 0:
        rest = n * w - copies
        u = torch.rand(left, generator=generator, dtype=torch.float64).sort().values
        extra = _from_uniforms(rest / rest.sum(), u)
        copies += torch.bincount(extra, minlength=n)
    return torch.repeat_interleave(torch.arange(n), copies)


SCHEMES: dict[str, Scheme] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise HindsightError(f"Unknown resampling scheme {name!r}; choose one of {', '.join(SCHEMES)}.")
    return SCHEMES[name]
