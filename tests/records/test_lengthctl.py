"""Length-controlled agreement on synthetic sets where length alone decides, and where it does not."""

import numpy as np
import pytest

from hindsight.errors import HindsightError
from hindsight.records.lengthctl import fit_logistic, length_controlled_agreement


def _lengths(rng, n):
    a, b = rng.integers(20, 400, size=n), rng.integers(20, 400, size=n)
    return a.astype(float), b.astype(float)


def _agreement(judge_picks_1, reference_picks_1, len_1, len_2):
    agree = judge_picks_1 == reference_picks_1
    pref = np.where(reference_picks_1, len_1, len_2)
    other = np.where(reference_picks_1, len_2, len_1)
    return agree, pref, other


def test_length_alone_decides_drops_to_chance():
    rng = np.random.default_rng(0)
    n = 3000
    l1, l2 = _lengths(rng, n)
    x = np.tanh((l1 - l2) / 150)
    reference = rng.random(n) < 1 / (1 + np.exp(-3 * x))  # prefers the longer output
    judge = rng.random(n) < 1 / (1 + np.exp(4 * x))  # prefers the shorter one, independently given lengths
    r = length_controlled_agreement(*_agreement(judge, reference, l1, l2), n_resamples=50)
    assert r.raw < 0.35  # a length-driven judge disagrees with a length-biased reference
    assert r.controlled == pytest.approx(0.5, abs=0.04)
    assert r.phi < 0 and r.low < 0.5 < r.high


def test_judge_perfectly_separated_by_length_moves_towards_chance():
    """No item has equal lengths here, so agreement at equal length is not identified: the small ridge keeps the
    fit finite and the estimate moves from the raw rate towards 0.5 without reaching it (documented)."""
    rng = np.random.default_rng(1)
    l1, l2 = _lengths(rng, 1000)
    reference = np.where(rng.random(1000) < 0.8, l1 > l2, l1 < l2)  # the longer one, 80% of the time
    judge = l1 < l2
    r = length_controlled_agreement(*_agreement(judge, reference, l1, l2), n_resamples=0)
    assert r.raw == pytest.approx(0.2, abs=0.04)
    assert r.raw + 0.05 < r.controlled < 0.5


def test_agreement_unrelated_to_length_is_kept():
    rng = np.random.default_rng(2)
    n = 3000
    l1, l2 = _lengths(rng, n)
    reference = rng.random(n) < 1 / (1 + np.exp(-3 * np.tanh((l1 - l2) / 150)))
    judge = np.where(rng.random(n) < 0.8, reference, ~reference)  # agrees 80% whatever the lengths
    r = length_controlled_agreement(*_agreement(judge, reference, l1, l2), n_resamples=50)
    assert r.raw == pytest.approx(0.8, abs=0.03)
    assert r.controlled == pytest.approx(r.raw, abs=0.03)
    assert r.low < r.controlled < r.high


def test_fit_logistic_recovers_coefficients():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 20000)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(0.5 + 2.0 * x)))).astype(float)
    theta, phi = fit_logistic(x, y, ridge=0.0)
    assert theta == pytest.approx(0.5, abs=0.06) and phi == pytest.approx(2.0, abs=0.12)


def test_mismatched_lengths_are_one_sentence():
    with pytest.raises(HindsightError):
        length_controlled_agreement([1, 0], [10, 20, 30], [1, 2, 3])
