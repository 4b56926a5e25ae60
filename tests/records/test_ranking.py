import math

import pytest

from hindsight.records.ranking import mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_hand_computed():
    # relevant at ranks 2 and 4 of 5; two relevant documents exist
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(["a", "r1", "b", "r2", "c"], {"r1", "r2"}, k=10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(["a", "r1", "b", "r2", "c"], {"r1", "r2"}, k=3) == pytest.approx((1 / math.log2(3)) / ideal)
    assert ndcg_at_k(["r1", "r2", "a"], {"r1", "r2"}) == pytest.approx(1.0)
    assert ndcg_at_k(["a", "b"], {"r"}) == 0.0
    # a relevant document never retrieved still counts in the ideal ranking
    assert ndcg_at_k(["r1", "a"], {"r1", "r9"}) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_mrr_and_recall_hand_computed():
    ranked = ["a", "b", "r1", "c", "r2"]
    assert mrr_at_k(ranked, {"r1", "r2"}) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, {"r1", "r2"}, k=2) == 0.0
    assert mrr_at_k(["r2"], {"r2"}) == 1.0
    assert recall_at_k(ranked, {"r1", "r2", "r3"}, k=3) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, {"r1", "r2", "r3"}, k=5) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, set(), k=5) == 0.0


def test_k_must_be_positive():
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], {"a"}, k=0)
