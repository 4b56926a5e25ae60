"""Paired comparisons: is system A better than system B on the *same* items?

Every comparative evaluation scores several systems on one set of items, so the question "does A beat B" is a
paired one: the per-item differences ``a_i - b_i`` carry it, and two systems' separate intervals (which
overlap far more often than the paired one spans zero) cannot answer it. For each pair this module gives

- the mean difference with a seeded paired-bootstrap 95% interval (items resampled with replacement, the same
  resample for both systems, percentile interval, 10,000 resamples by default);
- wins / losses / ties (a tie is ``|a_i - b_i| <= tol``);
- the exact two-sided sign-test p-value (ties dropped) and the two-sided Wilcoxon signed-rank p-value (zero
  differences dropped, mid-ranks for tied magnitudes; exact permutation distribution up to 60 non-zero
  differences, normal approximation with tie correction above). On 0/1 scores every magnitude ties, and the
  Wilcoxon test is then exactly the sign test (McNemar's test);
- Holm's step-down adjustment of the Wilcoxon p-values when several systems face one baseline.

:func:`compare_systems` puts it together: given per-item scores of several systems it picks the strongest
baseline (highest mean among the named baselines) and compares every other system against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hindsight.errors import HindsightError

N_RESAMPLES = 10_000
EXACT_WILCOXON_MAX = 60  # exact permutation distribution up to this many non-zero differences


def _diffs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise HindsightError(f"Paired scores need two equally long lists (got {x.shape} and {y.shape}).")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise HindsightError("Paired scores must be finite numbers (found NaN or infinity).")
    return x - y


def resamples(n: int, n_resamples: int, seed: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Seeded bootstrap resamples of ``n`` items, in chunks ``(first resample's number, [chunk, n] indices)``
    that bound memory for long item lists; every paired statistic here draws from this one stream."""
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_resamples, chunk):
        yield start, rng.integers(0, n, size=(min(n_resamples, start + chunk) - start, n))


def bootstrap_interval(diffs: Sequence[float], *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` over ``n_resamples`` seeded resamples of the items."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return (float("nan"), float("nan"))
    means = np.empty(n_resamples)
    for start, idx in resamples(d.size, n_resamples, seed):
        means[start:start + len(idx)] = d[idx].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (float(low), float(high))


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign-test p-value: P(a split at least this uneven | wins and losses equally likely)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    sorted_vals = values[order]
    i = 0
    while i < values.size:
        j = i
        while j + 1 < values.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon_signed_rank(diffs: Sequence[float], *, tol: float = 1e-12) -> float:
    """Two-sided Wilcoxon signed-rank p-value (zeros dropped, mid-ranks for ties); 1.0 with nothing to test."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.abs(d) > tol]
    n = d.size
    if n == 0:
        return 1.0
    ranks = _midranks(np.round(np.abs(d), 12))
    w_plus = float(ranks[d > 0].sum())
    if n <= EXACT_WILCOXON_MAX:
        doubled = np.rint(2 * ranks).astype(int)  # mid-ranks are halves: doubled they are integers
        counts = np.zeros(int(doubled.sum()) + 1)
        counts[0] = 1.0
        for r in doubled:  # the number of sign patterns giving each doubled W+ (subset sums)
            counts[r:] = counts[r:] + counts[:-r]  # the right side is evaluated before the write
        probs = counts / counts.sum()
        w2 = int(round(2 * w_plus))
        lower, upper = probs[:w2 + 1].sum(), probs[w2:].sum()
        return float(min(1.0, 2 * min(lower, upper)))
    mean = n * (n + 1) / 4
    _, tie_sizes = np.unique(ranks, return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - float(((tie_sizes**3 - tie_sizes) / 48).sum())
    if var <= 0:
        return 1.0
    z = (abs(w_plus - mean) - 0.5) / math.sqrt(var)  # continuity correction
    return float(min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2))))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class Paired:
    """One system against a baseline on the same items (``diff`` = system - baseline, higher is better)."""

    system: str
    baseline: str
    n: int
    system_mean: float
    baseline_mean: float
    diff: float
    low: float
    high: float
    wins: int
    losses: int
    ties: int
    p_sign: float
    p_wilcoxon: float
    p_holm: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_compare(system: str, a: Sequence[float], baseline: str, b: Sequence[float], *,
                   n_resamples: int = N_RESAMPLES, seed: int = 0, tol: float = 1e-12) -> Paired:
    """Mean difference with its paired bootstrap interval, wins/losses/ties and both p-values (unadjusted)."""
    d = _diffs(a, b)
    wins, losses = int((d > tol).sum()), int((d < -tol).sum())
    low, high = bootstrap_interval(d, n_resamples=n_resamples, seed=seed)
    p_w = wilcoxon_signed_rank(d, tol=tol)
    nan = float("nan")
    return Paired(system, baseline, int(d.size), float(np.mean(a)) if d.size else nan,
                  float(np.mean(b)) if d.size else nan, float(d.mean()) if d.size else nan, low, high,
                  wins, losses, int(d.size) - wins - losses, sign_test(wins, losses), p_w, p_w)


def strongest(scores: Mapping[str, Sequence[float]], candidates: Sequence[str]) -> str:
    """The candidate with the highest mean score (the first named one on a tie)."""
    present = [c for c in candidates if c in scores]
    if not present:
        raise HindsightError(f"None of the baselines {', '.join(candidates)} has scores.")
    return max(present, key=lambda c: (float(np.mean(scores[c])), -present.index(c)))


def compare_systems(scores: Mapping[str, Sequence[float]], *, baselines: Sequence[str] | None = None,
                    metric: str = "score", n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Every system against the strongest baseline, Holm-corrected; a JSON-able table.

    ``scores`` maps a system name to its per-item scores (the same items in the same order for all).
    ``baselines`` names the systems that may serve as baseline (default: all of them). Returns
    ``{"metric", "baseline", "n", "seed", "resamples", "rows": [Paired.as_dict(), ...]}``.
    """
    names = list(scores)
    if len(names) < 2:
        return {"metric": metric, "baseline": names[0] if names else None, "n": 0, "seed": seed,
                "resamples": n_resamples, "rows": []}
    base = strongest(scores, list(baselines) if baselines else names)
    rows = [paired_compare(s, scores[s], base, scores[base], n_resamples=n_resamples, seed=seed)
            for s in names if s != base]
    for r, p in zip(rows, holm([r.p_wilcoxon for r in rows])):
        r.p_holm = p
    return {"metric": metric, "baseline": base, "n": rows[0].n, "seed": seed, "resamples": n_resamples,
            "rows": [r.as_dict() for r in rows]}
