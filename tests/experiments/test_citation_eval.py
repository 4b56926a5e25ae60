"""Citation evaluation: hand-computed overlap, gold ties, summaries, incremental records that resume."""

from __future__ import annotations

import pytest
import torch

from hindsight.experiments.citation import (
    CitationEval, citation_items, detokenize, gold_sources, lexical_overlap, summarise_citation,
)
from hindsight.experiments.runner import run_experiment
from hindsight.records.results import ResultFile
from hindsight.reverse.scorers import Scores
from tests.experiments.stubs import over


def test_lexical_overlap_by_hand():
    # unigrams: 2 of 3 shared -> F1 2/3; bigrams: 1 of 2 shared -> F1 1/2; mean 7/12
    assert lexical_overlap("The cat sat", "the cat ran") == pytest.approx(7 / 12)
    assert lexical_overlap("a b", "c d") == 0.0
    assert lexical_overlap("same words here", "Same words, here!") == pytest.approx(1.0)


def test_gold_sources_keeps_ties():
    gold, best = gold_sources("the dog barked", ["a cat.", "the dog barked loudly.", "The dog barked loudly!"])
    assert gold == [1, 2] and best == pytest.approx(lexical_overlap("the dog barked", "the dog barked loudly"))


def test_detokenize():
    assert detokenize("He did n't go , she 's here .") == "He didn't go, she's here."


class SecondSentenceScorer:
    """Prefers the text that contains 'two'."""

    def score(self, queries, responses):
        total = torch.tensor([1.0 if "two" in r else 0.0 for r in responses], dtype=torch.float64)
        return Scores(total, torch.ones(len(responses), dtype=torch.long))


def test_citation_experiment_records_and_resumes(tiny, tmp_path):
    from hindsight.records.data import find_data_root

    if find_data_root() is None:
        pytest.skip("needs the evaluation data (shared/data or $HINDSIGHT_DATA)")
    items = [{"key": f"a:{i}", "article": "a", "highlight": "h", "sentences": ["one.", "two.", "three."],
              "gold": [g], "overlap": 0.5} for i, g in enumerate([1, 2])]
    rf = ResultFile(tmp_path / "c.jsonl", key_field="key")
    done = []
    stub = {"stub": SecondSentenceScorer()}
    exp = over(CitationEval, items, searches=["linear", "binary", "exclusion"]).use(lm=tiny, scorers=stub)
    run_experiment(exp, rf, on_item=done.append)
    assert [r["key"] for r in done] == ["a:0", "a:1"]
    assert {c: r["index"] for c, r in done[0]["results"].items()} == {"stub/linear": 1, "stub/binary": 1,
                                                                    "stub/exclusion": 1}
    again = []
    exp = over(CitationEval, items, searches=["linear"]).use(lm=tiny, scorers=stub)
    run_experiment(exp, ResultFile(rf.path, "key"), on_item=again.append)
    assert again == [None, None]  # both resumed from the file
    s = summarise_citation(ResultFile(rf.path, "key").values())
    row = next(r for r in s["rows"] if r["search"] == "linear")
    assert (row["n"], row["correct"], row["accuracy"]) == (2, 1, 0.5)
    assert 0 < row["low"] < 0.5 < row["high"] < 1
    assert s["chance"] == pytest.approx(1 / 3)
    assert summarise_citation(rf.values(), min_overlap=0.6)["items"] == 0


def test_citation_items_on_data(data_root):
    items = list(citation_items(data_root, limit=3, max_sentences=6, highlights_per_article=2))
    assert 3 <= len(items) <= 6 and len({it["key"] for it in items}) == len(items)
    for it in items:
        assert len(it["sentences"]) <= 6 and all(0 <= g < len(it["sentences"]) for g in it["gold"])
        assert it["overlap"] == pytest.approx(max(lexical_overlap(it["highlight"], s) for s in it["sentences"]),
                                              abs=1e-4)


def test_dropped_highlights_are_counted_with_their_reason(tmp_path):
    """The overlap filter runs before scoring; the summary still says how many were dropped and why."""
    import json

    folder = tmp_path / "cnndm_frank"
    folder.mkdir()
    rows = [{"id": "keep", "article_sentences": ["The cat sat on the mat."], "highlights": "The cat sat on the mat ."},
            {"id": "far", "article_sentences": ["Stocks fell sharply."], "highlights": "A dog barked ."},
            {"id": "empty", "article_sentences": [" "], "highlights": "Nothing here ."}]
    (folder / "cnndm_test_frank.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exp = CitationEval(data=str(tmp_path), limit=None, min_overlap=0.3, scorers=["stub"], searches=["linear"])
    kept, dropped = exp.screen()
    assert [it["key"] for it in kept] == ["keep:0"]
    assert [(d.get("key") or d["article"], d["reason"]) for d in dropped] == [("far:0", "low_overlap"),
                                                                             ("empty", "empty_article")]
    record = {"key": "keep:0", "article": "keep", "highlight": "h", "gold": [0], "overlap": 1.0, "n_sentences": 1,
              "results": {"stub/linear": {"index": 0, "correct": True, "calls": 1, "pairs": 1, "tokens": 3,
                                          "seconds": 0.1}}}
    s = exp.summarise([record])
    assert s["items"] == 1 and s["skipped_low_overlap"] == 1
    assert s["skipped"]["low_overlap"] == 1 and s["skipped"]["empty_article"] == 1
    assert s["skipped"]["low_overlap_examples"] == [{"key": "far:0", "overlap": 0.0}]
