"""Hybrid reranking: fuse the first stage's scores (BM25) with a reranker's, as users of rerankers do.

Three fusions of two score lists over the same candidates (``first`` from the first stage, ``second`` from
the reranker; higher is better in both):

- ``minmax``: ``(1 - alpha) * minmax(first) + alpha * minmax(second)``, each list scaled to [0, 1] per query;
- ``z``:      the same with each list z-normalised per query (mean 0, standard deviation 1);
- ``rrf``:    reciprocal-rank fusion, ``(1 - alpha) / (k + rank_first) + alpha / (k + rank_second)`` with
              ``k = 60`` (``alpha = 0.5`` is the usual unweighted RRF, up to a factor 2).

``alpha = 0`` is the first stage alone and ``alpha = 1`` the reranker alone. :func:`fit_alpha` chooses
``alpha`` on development queries given by the user: the grid value with the best mean metric over all of them
is the one to apply (unchanged) elsewhere, and a k-fold cross-validation over the same queries estimates what
that choice is worth on queries it was not chosen on. Ties in a fused list keep the first stage's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hindsight.errors import HindsightError

FUSIONS = ("minmax", "z", "rrf")
RRF_K = 60
DEFAULT_GRID = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))


def minmax(scores: Sequence[float]) -> np.ndarray:
    """Scores scaled to [0, 1]; all zeros when they are all equal (no information to scale)."""
    s = np.asarray(scores, dtype=float)
    span = s.max() - s.min() if s.size else 0.0
    return (s - s.min()) / span if span > 0 else np.zeros_like(s)


def znorm(scores: Sequence[float]) -> np.ndarray:
    """Scores minus their mean over their standard deviation; all zeros when they are all equal."""
    s = np.asarray(scores, dtype=float)
    sd = s.std() if s.size else 0.0
    return (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)


def ranks(scores: Sequence[float]) -> np.ndarray:
    """1-based rank of each score (best = 1); ties broken by position, as a stable sort would."""
    s = np.asarray(scores, dtype=float)
    order = np.argsort(-s, kind="stable")
    r = np.empty(s.size, dtype=int)
    r[order] = np.arange(1, s.size + 1)
    return r


def fuse(first: Sequence[float], second: Sequence[float], method: str = "minmax", alpha: float = 0.5,
         k: int = RRF_K) -> list[float]:
    """The fused score of every candidate (higher is better)."""
    if method not in FUSIONS:
        raise HindsightError(f"Unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}.")
    if not 0.0 <= alpha <= 1.0:
        raise HindsightError(f"alpha must lie in [0, 1] (got {alpha}).")
    if len(first) != len(second):
        raise HindsightError(f"Fusion needs one score per candidate from both stages ({len(first)} vs {len(second)}).")
    if not (np.isfinite(np.asarray(first, float)).all() and np.isfinite(np.asarray(second, float)).all()):
        raise HindsightError("Fusion needs finite scores from both stages.")
    if method == "rrf":
        fused = (1 - alpha) / (k + ranks(first)) + alpha / (k + ranks(second))
    else:
        norm = minmax if method == "minmax" else znorm
        fused = (1 - alpha) * norm(first) + alpha * norm(second)
    return [float(v) for v in fused]


def fused_order(first: Sequence[float], second: Sequence[float], method: str = "minmax",
                alpha: float = 0.5) -> list[int]:
    """Candidate indices best first (ties keep the given, first-stage order)."""
    fused = fuse(first, second, method, alpha)
    return sorted(range(len(fused)), key=lambda i: -fused[i])


@dataclass
class Query:
    """One development query: candidate ids in first-stage order, both score lists, the relevant ids."""

    ids: Sequence[str]
    first: Sequence[float]
    second: Sequence[float]
    relevant: Sequence[str]


@dataclass
class AlphaFit:
    """The chosen alpha, the mean metric at every grid value, and the cross-validated estimate."""

    method: str
    alpha: float
    metric_at_alpha: float
    grid: list[float]
    mean_by_alpha: list[float]
    cv_metric: float
    fold_alphas: list[float] = field(default_factory=list)
    n_queries: int = 0
    folds: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Metric = Callable[[Sequence[str], Sequence[str]], float]


def _table(queries: Sequence[Query], method: str, grid: Sequence[float], metric: Metric) -> np.ndarray:
    """metric[query, grid index] of the fused ranking."""
    out = np.empty((len(queries), len(grid)))
    for qi, q in enumerate(queries):
        for gi, a in enumerate(grid):
            order = fused_order(q.first, q.second, method, a)
            out[qi, gi] = metric([q.ids[i] for i in order], q.relevant)
    return out


def _best(means: np.ndarray, grid: Sequence[float]) -> int:
    """The best grid index; among equals, the one nearest 0.5 (a middle weight over an extreme one)."""
    top = means.max()
    cands = [i for i in range(len(grid)) if means[i] >= top - 1e-12]
    return min(cands, key=lambda i: (abs(grid[i] - 0.5), grid[i]))


def fit_alpha(queries: Sequence[Query], metric: Metric, *, method: str = "minmax",
              grid: Sequence[float] = DEFAULT_GRID, folds: int = 5, seed: int = 0) -> AlphaFit:
    """Choose ``alpha`` on development queries (best mean ``metric``), with a k-fold cross-validated score."""
    if method not in FUSIONS:
        raise HindsightError(f"Unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}.")
    if not queries:
        raise HindsightError("Fitting alpha needs at least one development query.")
    grid = [float(a) for a in grid]
    table = _table(queries, method, grid, metric)
    means = table.mean(axis=0)
    chosen = _best(means, grid)
    folds = max(1, min(folds, len(queries)))
    fold_alphas, held = [], np.empty(len(queries))
    if folds > 1:
        perm = np.random.default_rng(seed).permutation(len(queries))
        for part in np.array_split(perm, folds):
            train = np.setdiff1d(perm, part)
            gi = _best(table[train].mean(axis=0), grid)
            fold_alphas.append(grid[gi])
            held[part] = table[part, gi]
        cv = float(held.mean())
    else:
        cv = float(means[chosen])
    return AlphaFit(method, grid[chosen], float(means[chosen]), grid, [float(m) for m in means], cv,
                    fold_alphas, len(queries), folds)
