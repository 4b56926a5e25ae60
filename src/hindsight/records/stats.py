"""Small statistics helpers shared by every evaluation: rates with intervals, means with spreads."""

from __future__ import annotations

import math
from collections.abc import Sequence


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a rate; sensible at 0 and n, unlike the normal approximation."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """(mean, low, high) with a normal-approximation 95% interval on the mean."""
    n = len(values)
    if n == 0:
        return (float("nan"), float("nan"), float("nan"))
    m = sum(values) / n
    if n == 1:
        return (m, m, m)
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    half = z * math.sqrt(var / n)
    return (m, m - half, m + half)


def format_rate(successes: int, n: int) -> str:
    """'0.731 [0.652, 0.798] (n=120)'."""
    lo, hi = wilson_interval(successes, n)
    rate = successes / n if n else float("nan")
    return f"{rate:.3f} [{lo:.3f}, {hi:.3f}] (n={n})"
