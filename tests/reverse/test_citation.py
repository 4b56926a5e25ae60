"""Citation searches: a planted source is found; binary search costs ceil(log2 n) calls; batched == single."""

from __future__ import annotations

import math

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.reverse.citation import (
    attribute, binary_search, cite, exclusion_search, linear_search, split_sentences,
)
from hindsight.reverse.scorers import Scores, make_scorer


class PlantedScorer:
    """Scores a text highly when it contains the planted sentence; longer texts lose a little (like an LM)."""

    def __init__(self, planted: str) -> None:
        self.planted, self.calls, self.pairs = planted, 0, 0

    def score(self, queries, responses):
        self.calls += 1
        self.pairs += len(responses)
        total = [5.0 * (self.planted in r) - 0.01 * len(r.split()) for r in responses]
        return Scores(torch.tensor(total, dtype=torch.float64), torch.ones(len(total), dtype=torch.long))


def article(n: int) -> list[str]:
    return [f"Sentence number {i} talks about topic {i}." for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 32])
def test_binary_search_finds_planted_sentence_in_log_calls(n):
    for planted in range(n):
        sents = article(n)
        stub = PlantedScorer(sents[planted])
        att = binary_search(stub, "summary", sents)
        assert att.index == planted
        assert stub.calls == att.calls <= math.ceil(math.log2(n)) if n > 1 else stub.calls == 0
        assert att.pairs == stub.pairs == 2 * att.calls
        assert all(lo <= planted < hi for lo, hi in att.path)


def test_binary_calls_are_logarithmic_not_linear():
    sents = article(1024)
    stub = PlantedScorer(sents[777])
    assert binary_search(stub, "summary", sents).index == 777
    assert stub.calls == 10  # log2(1024); a linear scan would be 1024 pairs


@pytest.mark.parametrize("planted", [0, 3, 6])
def test_exclusion_and_linear_find_planted_sentence(planted):
    sents = article(7)
    stub = PlantedScorer(sents[planted])
    ex = exclusion_search(stub, "summary", sents)
    assert ex.index == planted and ex.calls == 1 and ex.pairs == 8
    assert ex.scores[planted] == pytest.approx(5.0 - 0.01 * len(sents[planted].split()))
    lin = linear_search(stub, "summary", sents)
    assert lin.index == planted and lin.pairs == 7


def test_searches_on_tiny_model_equal_single_scoring(tiny):
    scorer = make_scorer("trlm-fo", tiny, task="citation")
    sents = ["the dog ran.", "a bird sang in the tree.", "rain fell all day.", "we ate soup."]
    summary = "a bird sang."

    def one(text):
        return float(scorer.score([summary], [text]).total[0])

    lin = attribute(scorer, summary, sents, "linear")
    assert lin.scores == pytest.approx([one(s) for s in sents], abs=1e-4)
    assert lin.index == max(range(4), key=lambda i: one(sents[i]))
    ex = attribute(scorer, summary, sents, "exclusion")
    full = one(" ".join(sents))
    drops = [full - one(" ".join(s for j, s in enumerate(sents) if j != i)) for i in range(4)]
    assert ex.scores == pytest.approx(drops, abs=1e-4)
    assert ex.index == max(range(4), key=drops.__getitem__)
    b = attribute(scorer, summary, sents, "binary")
    left, right = one(" ".join(sents[:2])), one(" ".join(sents[2:]))
    assert b.path[0] == ((0, 2) if left >= right else (2, 4))
    assert b.calls == 2


@pytest.mark.slow
def test_default_model_finds_planted_source(default_lm):
    sents = [
        "Heavy snow closed three schools.",
        "The football club signed a striker from Brazil.",
        "A local bakery won a national award for its sourdough bread.",
        "Police are searching for a grey van.",
    ]
    summary = "A bakery in the town won a national prize for its sourdough."
    scorer = make_scorer("trlm-fo", default_lm, task="citation")
    for search in ("linear", "binary", "exclusion"):
        assert attribute(scorer, summary, sents, search).index == 2, search


def test_split_sentences():
    text = ('Mr. Smith went to Washington. He said: "It is done." Then he left!\n'
            'The U.S. team won 3-1. J. R. R. Tolkien wrote books? Yes. 2015 was a year')
    assert split_sentences(text) == [
        "Mr. Smith went to Washington.", 'He said: "It is done."', "Then he left!",
        "The U.S. team won 3-1.", "J. R. R. Tolkien wrote books?", "Yes.", "2015 was a year",
    ]
    assert split_sentences("  ") == []
    assert split_sentences("no end mark") == ["no end mark"]


def test_cite_and_errors():
    stub = PlantedScorer("Rain fell.")
    out = cite(stub, "It rained. The sun came out.", "The sun shone. Rain fell. Birds sang.", "linear")
    assert [a.index for _, a in out] == [1, 1]
    with pytest.raises(HindsightError):
        attribute(stub, "x", ["a."], "sideways")
    with pytest.raises(HindsightError):
        attribute(stub, " ", ["a."], "linear")
    with pytest.raises(HindsightError):
        cite(stub, "x.", "   ", "linear")
