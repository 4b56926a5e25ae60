"""Length-controlled agreement: how often a judge agrees with a reference when length is taken out.

A judge that always picks the shorter (or the longer) answer agrees with a length-biased reference for reasons
that have nothing to do with quality. AlpacaEval's length-controlled win rate handles this with a logistic
model that has the length difference as a covariate and reports the prediction at zero length difference.
We do the same for agreement:

    logit P(judge agrees with the reference on item i) = theta + phi * tanh(delta_i / s)

where ``delta_i`` is the length of the reference-preferred output minus the length of the other one, and ``s``
their standard deviation (the ``tanh`` keeps a few very long outputs from dominating, as in AlpacaEval). The
length-controlled agreement is ``sigmoid(theta)``: the agreement the model predicts for two outputs of equal
length. When length alone decides, agreement at equal length is a coin flip and this drops to 0.5; when the
judge agrees for reasons unrelated to length it stays at the raw agreement.

The fit is Newton's method on the log-likelihood with a small ridge penalty on ``phi`` only (so a judge that is
perfectly separated by length still gets a finite fit); numpy only, deterministic. With perfect separation
(no pair of near-equal length where the judge ever goes the other way) agreement at equal length is not
identified, and the estimate lies between the raw rate and 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hindsight.errors import HindsightError
from hindsight.records.paired import resamples


@dataclass
class LengthControlled:
    """Raw and length-controlled agreement, the fitted coefficients, and a bootstrap interval."""

    n: int
    raw: float
    controlled: float
    low: float
    high: float
    theta: float
    phi: float
    scale: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1 / (1 + np.exp(-x))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, ridge: float = 1e-2, iterations: int = 100) -> tuple[float, float]:
    """(theta, phi) maximising sum log-likelihood of ``y ~ sigmoid(theta + phi x)`` minus ``ridge/2 phi^2``."""
    w = np.zeros(2)
    design = np.stack([np.ones_like(x), x], axis=1)
    penalty = np.diag([1e-9, ridge])  # the intercept is (almost) unpenalised, as in AlpacaEval's fit
    for _ in range(iterations):
        p = _sigmoid(design @ w)
        grad = design.T @ (y - p) - penalty @ w
        hess = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hess, grad)
        w = w + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(w[0]), float(w[1])


def _covariate(delta: np.ndarray, scale: float) -> np.ndarray:
    return np.tanh(delta / scale) if scale > 0 else np.zeros_like(delta)


def length_controlled_agreement(agree: Sequence[bool | int], length_preferred: Sequence[float],
                                length_other: Sequence[float], *, n_resamples: int = 1000, seed: int = 0,
                                ridge: float = 1e-2) -> LengthControlled:
    """Agreement with the length difference regressed out, with a seeded bootstrap 95% interval.

    ``agree[i]`` is whether the judge picked the reference-preferred output of item ``i``; the two lengths
    (characters or tokens) are those of the preferred and of the other output.
    """
    y = np.asarray(agree, dtype=float)
    delta = np.asarray(length_preferred, dtype=float) - np.asarray(length_other, dtype=float)
    if y.shape != delta.shape or y.ndim != 1:
        raise HindsightError("Length control needs one agreement and two lengths per item.")
    n = int(y.size)
    if n == 0:
        nan = float("nan")
        return LengthControlled(0, nan, nan, nan, nan, nan, nan, nan)
    scale = float(np.std(delta))
    theta, phi = fit_logistic(_covariate(delta, scale), y, ridge=ridge)
    boot = np.empty(n_resamples)
    for start, chunk in resamples(n, n_resamples, seed):
        for b, idx in enumerate(chunk, start):
            s = float(np.std(delta[idx]))
            boot[b] = _sigmoid(fit_logistic(_covariate(delta[idx], s), y[idx], ridge=ridge)[0])
    low, high = np.quantile(boot, [0.025, 0.975]) if n_resamples else (math.nan, math.nan)
    return LengthControlled(n, float(y.mean()), float(_sigmoid(theta)), float(low), float(high), theta, phi,
                            scale)
