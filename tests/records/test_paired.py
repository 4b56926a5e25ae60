"""Paired statistics against values computed by hand on small fixed inputs."""

import math

import numpy as np
import pytest

from hindsight.errors import HindsightError
from hindsight.records.paired import (bootstrap_interval, compare_systems, holm, paired_compare, sign_test,
                                      strongest, wilcoxon_signed_rank)


def test_sign_test_exact_values():
    assert sign_test(9, 1) == pytest.approx(22 / 1024)  # 2 * (C(10,0) + C(10,1)) / 2^10
    assert sign_test(1, 9) == pytest.approx(22 / 1024)
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(3, 3) == 1.0
    assert sign_test(0, 0) == 1.0


def test_wilcoxon_exact_by_enumeration():
    assert wilcoxon_signed_rank([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    # W+ = 1+3+4+5 = 13; subsets of {1..5} with sum >= 13 are the complements of {}, {1}, {2}: 3 of 32
    assert wilcoxon_signed_rank([1, -2, 3, 4, 5]) == pytest.approx(6 / 32)
    # zeros dropped: [2, -1, 3] -> W+ = 5, P(W+ >= 5) = 2/8
    assert wilcoxon_signed_rank([2, 0, -1, 3]) == pytest.approx(0.5)
    assert wilcoxon_signed_rank([0, 0]) == 1.0


def test_wilcoxon_on_binary_scores_is_the_sign_test():
    diffs = [1] * 8 + [-1] + [0] * 5
    assert wilcoxon_signed_rank(diffs) == pytest.approx(sign_test(8, 1))
    assert sign_test(8, 1) == pytest.approx(20 / 512)


def test_wilcoxon_agrees_with_scipy_exact_and_approx():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    d = rng.normal(0.3, 1.0, size=20)
    assert wilcoxon_signed_rank(d) == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, rel=1e-9)
    big = np.round(rng.normal(0.1, 1.0, size=200), 1)  # ties among magnitudes, normal approximation
    ref = stats.wilcoxon(big, method="approx", correction=True, zero_method="wilcox").pvalue
    assert wilcoxon_signed_rank(big) == pytest.approx(ref, rel=1e-6)


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_bootstrap_interval():
    assert bootstrap_interval([0.5] * 4) == (0.5, 0.5)
    # two items: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 -> 2.5% and 97.5% are 0 and 1
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    d = [1.0, 0.0] * 50
    lo, hi = bootstrap_interval(d, seed=1)
    assert (lo, hi) == bootstrap_interval(d, seed=1)  # seeded
    assert lo == pytest.approx(0.5 - 1.96 * 0.05, abs=0.02) and hi == pytest.approx(0.5 + 1.96 * 0.05, abs=0.02)


def test_paired_compare_by_hand():
    r = paired_compare("A", [3, 2, 1, 4], "B", [1, 2, 2, 1])  # differences 2, 0, -1, 3
    assert (r.n, r.wins, r.losses, r.ties) == (4, 2, 1, 1)
    assert r.diff == pytest.approx(1.0) and r.system_mean == 2.5 and r.baseline_mean == 1.5
    assert r.p_sign == 1.0 and r.p_wilcoxon == pytest.approx(0.5)
    assert r.low <= 1.0 <= r.high


def test_paired_compare_rejects_bad_input():
    with pytest.raises(HindsightError):
        paired_compare("A", [1, 2], "B", [1])
    with pytest.raises(HindsightError):
        paired_compare("A", [1, math.nan], "B", [1, 2])


def test_compare_systems_picks_strongest_baseline_and_holm_corrects():
    scores = {"bm25": [1, 1, 1, 0, 1, 1, 1, 1, 1, 1], "forward": [0] * 10,
              "trlm": [1] * 10, "fused": [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]}
    table = compare_systems(scores, baselines=["bm25", "forward"], metric="hit", n_resamples=2000)
    assert table["baseline"] == "bm25" and table["n"] == 10
    rows = {r["system"]: r for r in table["rows"]}
    assert set(rows) == {"forward", "trlm", "fused"}
    assert (rows["forward"]["wins"], rows["forward"]["losses"]) == (0, 9)
    assert rows["forward"]["p_wilcoxon"] == pytest.approx(sign_test(0, 9))
    p = [rows[s]["p_wilcoxon"] for s in ("forward", "trlm", "fused")]
    assert [rows[s]["p_holm"] for s in ("forward", "trlm", "fused")] == pytest.approx(holm(p))
    assert rows["forward"]["p_holm"] == pytest.approx(3 * sign_test(0, 9))
    assert strongest(scores, ["forward", "trlm"]) == "trlm"
