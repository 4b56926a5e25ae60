"""Paired comparisons built from evaluation records: hand-made records, hand-computed rankings and tables."""

import pytest

from hindsight.errors import HindsightError
from hindsight.experiments.compare import (Fusion, citation_comparison, fit_fusion, jailbreak_comparison,
                                           preference_comparison, preference_picks, rain_comparison,
                                           recall_ceiling, retrieval_paired, retrieval_rankings)
from hindsight.records.paired import sign_test

REC = {"id": 1, "relevant": ["b"], "bm25": ["a", "b", "c"], "bm25_scores": [3.0, 2.0, 1.0], "top_k": 3,
       "scores": {"t": [[-10.0, 5], [-4.0, 2], [-6.0, 3]]}}


def test_retrieval_rankings_by_hand():
    rk = retrieval_rankings(REC, ["t"], ["sum", "mean"], [Fusion("t", "sum", "minmax", 0.5)])
    assert rk["BM25"] == ["a", "b", "c"]
    assert rk["t (sum)"] == ["b", "c", "a"]  # -4 > -6 > -10
    assert rk["t (mean)"] == ["a", "b", "c"]  # -2, -2, -2: ties keep BM25 order
    # minmax: BM25 [1, .5, 0], reranker [0, 1, 2/3] -> [.5, .75, 1/3]
    assert rk["t (sum) + BM25 [minmax, alpha 0.5]"] == ["b", "a", "c"]
    with pytest.raises(HindsightError, match="BM25 scores"):
        retrieval_rankings({k: v for k, v in REC.items() if k != "bm25_scores"}, ["t"], ["sum"],
                           [Fusion("t", "sum", "z", 0.5)])


def test_retrieval_paired_and_ceiling():
    other = {**REC, "id": 2, "relevant": ["a"]}
    rankings = [retrieval_rankings(r, ["t"], ["sum"]) for r in (REC, other)]
    tables = retrieval_paired(rankings, [REC["relevant"], other["relevant"]], baselines=["BM25"])
    mrr = next(t for t in tables if t["metric"] == "MRR@10")
    row = mrr["rows"][0]
    # claim 1: BM25 rr 1/2, t 1; claim 2: BM25 1, t 1/3 -> diffs +1/2, -2/3
    assert mrr["baseline"] == "BM25" and row["diff"] == pytest.approx((0.5 - 2 / 3) / 2)
    assert (row["wins"], row["losses"], row["ties"]) == (1, 1, 0)
    ceiling = recall_ceiling([REC, {**REC, "relevant": ["z"]}])
    assert ceiling["recall"] == 0.5 and ceiling["claims_with_relevant"] == 0.5
    assert ceiling["oracle_ndcg@10"] == pytest.approx(0.5)


def test_fit_fusion_on_records():
    fit = fit_fusion([REC, REC], "t", "sum", "minmax", folds=2)
    assert fit.metric_at_alpha == pytest.approx(1.0)  # any alpha > 1/3 puts b first
    assert fit.alpha == 0.5 and fit.cv_metric == pytest.approx(1.0)


def _pair(pid, pref, len_1, len_2, s1, s2):
    return {"id": pid, "preference": pref, "len_1": len_1, "len_2": len_2,
            "scores": {"t": [[s1, 10], [s2, 20]]}}


def test_preference_picks_and_comparison():
    decided = [_pair(1, 1, 50, 10, -15.0, -20.0), _pair(2, 2, 10, 50, -15.0, -20.0),
               _pair(3, 2, 30, 40, -30.0, -20.0), _pair(4, 1, 40, 30, -30.0, -20.0)]
    picks = preference_picks(decided, ["t"])
    assert picks["longer output"] == [1, 2, 2, 1]
    assert picks["t (sum)"] == [1, 1, 2, 2] and picks["t (mean)"] == [2, 2, 2, 2]  # -1.5 vs -1; -3 vs -1
    assert picks["majority class (always output 1)"] == [1, 1, 1, 1]
    res = preference_comparison(decided, picks, n_resamples_lc=0)
    paired = res["paired"]
    assert paired["baseline"] == "longer output"
    rows = {r["system"]: r for r in paired["rows"]}
    assert rows["t (sum)"]["diff"] == pytest.approx(-0.5) and rows["t (sum)"]["p_sign"] == sign_test(0, 2)
    lc = {r["system"]: r for r in res["length_controlled"]}
    assert "majority class (always output 1)" not in lc and lc["longer output"]["raw"] == 1.0


def test_citation_comparison_uses_chance_and_forward_as_baselines():
    recs = [{"gold": [0], "n_sentences": 8, "results": {"trlm-fo/linear": {"correct": c1},
                                                          "forward/linear": {"correct": c2}}}
            for c1, c2 in [(True, False)] * 6 + [(False, True), (True, True)]]
    table = citation_comparison(recs)
    assert table["baseline"] == "forward/linear"  # accuracy 0.25 against chance 0.125
    rows = {r["system"]: r for r in table["rows"]}
    assert (rows["trlm-fo/linear"]["wins"], rows["trlm-fo/linear"]["losses"]) == (6, 1)
    assert rows["trlm-fo/linear"]["p_sign"] == pytest.approx(sign_test(6, 1))


def test_jailbreak_and_rain_comparisons():
    recs = [{"split": "attack", "filters": {"kw": {}}, "alone": False, "rev": True},
            {"split": "attack", "filters": {"kw": {}}, "alone": True, "rev": True},
            {"split": "benign", "filters": {"kw": {}}, "alone": False, "rev": True}]
    tables = jailbreak_comparison(recs, lambda r, name: (r["alone"], r["rev"]))
    by = {t["split"]: t["rows"][0] for t in tables}
    assert by["attack"]["diff"] == pytest.approx(0.5) and by["benign"]["diff"] == pytest.approx(-1.0)
    assert (by["all"]["wins"], by["all"]["losses"], by["all"]["ties"]) == (1, 1, 1)
    rain = rain_comparison([{"judges": {"clf": [0.2, 0.6]}, "self_eval": [1.0, -1.0]},
                            {"judges": {"clf": [0.5, 0.7]}, "self_eval": [0.0, 1.0]}])
    clf = next(t for t in rain if t["judge"] == "clf")
    assert clf["baseline"] == "vanilla" and clf["rows"][0]["diff"] == pytest.approx(0.3)
    assert next(t for t in rain if t["judge"] == "self-eval")["rows"][0]["wins"] == 1
