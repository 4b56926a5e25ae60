"""Score fusion against hand-ranked lists, and alpha fitting against hand-computed cross-validation."""

import pytest

from hindsight.errors import HindsightError
from hindsight.reverse.fusion import Query, fit_alpha, fuse, fused_order, minmax, ranks, znorm

FIRST = [10.0, 8.0, 6.0, 4.0]  # candidates a, b, c, d in first-stage order
SECOND = [-5.0, -1.0, -3.0, -9.0]  # reranker: b, c, a, d


def test_normalisers():
    assert minmax(FIRST).tolist() == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert minmax(SECOND).tolist() == pytest.approx([0.5, 1, 0.75, 0])
    assert znorm([1.0, 3.0]).tolist() == pytest.approx([-1, 1])
    assert minmax([2.0, 2.0]).tolist() == [0, 0] and znorm([2.0, 2.0]).tolist() == [0, 0]
    assert ranks(SECOND).tolist() == [3, 1, 2, 4]


def test_minmax_fusion_by_hand():
    assert fuse(FIRST, SECOND, "minmax", 0.5) == pytest.approx([0.75, 5 / 6, 13 / 24, 0])
    assert fused_order(FIRST, SECOND, "minmax", 0.5) == [1, 0, 2, 3]  # b a c d
    assert fused_order(FIRST, SECOND, "minmax", 0.25) == [0, 1, 2, 3]  # 0.875, 0.75, 0.4375, 0: a b c d
    assert fused_order(FIRST, SECOND, "minmax", 0.0) == [0, 1, 2, 3]  # the first stage alone
    assert fused_order(FIRST, SECOND, "minmax", 1.0) == [1, 2, 0, 3]  # the reranker alone


def test_z_fusion_by_hand():
    # first: mean 7, sd sqrt(5); second: mean -4.5, sd sqrt(8.75)
    f = [(v - 7) / 5**0.5 for v in FIRST]
    s = [(v + 4.5) / 8.75**0.5 for v in SECOND]
    assert fuse(FIRST, SECOND, "z", 0.5) == pytest.approx([(x + y) / 2 for x, y in zip(f, s)])
    assert fused_order(FIRST, SECOND, "z", 0.5) == [1, 0, 2, 3]


def test_rrf_by_hand():
    got = fuse(FIRST, SECOND, "rrf", 0.5)
    want = [0.5 / 61 + 0.5 / 63, 0.5 / 62 + 0.5 / 61, 0.5 / 63 + 0.5 / 62, 0.5 / 64 + 0.5 / 64]
    assert got == pytest.approx(want)
    assert fused_order(FIRST, SECOND, "rrf", 0.5) == [1, 0, 2, 3]


def test_ties_keep_first_stage_order():
    assert fused_order([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], "minmax", 0.5) == [0, 1, 2]
    assert fused_order([1.0, 0.0], [0.0, 1.0], "minmax", 0.5) == [0, 1]


def test_bad_fusion_input_is_one_sentence():
    with pytest.raises(HindsightError):
        fuse(FIRST, SECOND, "max", 0.5)
    with pytest.raises(HindsightError):
        fuse(FIRST, SECOND, "minmax", 1.5)
    with pytest.raises(HindsightError):
        fuse(FIRST, SECOND[:2], "minmax", 0.5)
    with pytest.raises(HindsightError):
        fuse([float("nan")] * 4, SECOND, "minmax", 0.5)


def _rr(ranked, relevant):
    return next((1 / (i + 1) for i, d in enumerate(ranked) if d in relevant), 0.0)


def test_fit_alpha_by_hand():
    # Q1 and Q2 need the reranker (alpha > 0.5), Q3 the first stage (alpha <= 0.5; 0.5 ties -> first-stage order)
    q_rerank = Query(["x", "y"], [1.0, 0.0], [0.0, 1.0], ["y"])
    q_first = Query(["x", "y"], [1.0, 0.0], [0.0, 1.0], ["x"])
    fit = fit_alpha([q_rerank, q_rerank, q_first], _rr, grid=[0, 0.25, 0.5, 0.75, 1], folds=3)
    assert fit.mean_by_alpha == pytest.approx([2 / 3, 2 / 3, 2 / 3, 5 / 6, 5 / 6])
    assert fit.alpha == 0.75 and fit.metric_at_alpha == pytest.approx(5 / 6)  # nearest 0.5 among the best
    # leave-one-out: every held-out query gets the alpha its two companions prefer, which is wrong for it
    assert fit.cv_metric == pytest.approx(0.5)
    assert sorted(fit.fold_alphas) == [0.5, 0.5, 0.75]
    assert fit.n_queries == 3 and fit.as_dict()["method"] == "minmax"


def test_fit_alpha_needs_queries():
    with pytest.raises(HindsightError):
        fit_alpha([], _rr)
