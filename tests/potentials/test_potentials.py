import math

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.potentials import parse_potential
from hindsight.potentials.classifiers import Sentiment, Toxicity
from hindsight.potentials.text import Keywords, Regex
from hindsight.testing import PotentialContract

TEXTS = ["You are a stupid idiot.", "What a lovely, wonderful day!", "The train leaves at noon.",
         "I hate this awful movie.", ""]


class TextInputs:
    def inputs(self):
        return TEXTS, [[1, 2]] * len(TEXTS)


class TestToxicity(TextInputs, PotentialContract):
    def make(self):
        return Toxicity()


class TestToxicityThreshold(TextInputs, PotentialContract):
    def make(self):
        return Toxicity(threshold=0.5)


class TestSentiment(TextInputs, PotentialContract):
    def make(self):
        return Sentiment("positive")


class TestRegex(TextInputs, PotentialContract):
    def make(self):
        return Regex(r"\bday\b")


class TestKeywords(TextInputs, PotentialContract):
    def make(self):
        return Keywords(["hate", "awful"])


class TestProductTempered(TextInputs, PotentialContract):
    def make(self):
        return parse_potential("sentiment:negative^2*toxicity")


def test_toxicity_orders_texts():
    lp = Toxicity().log_phi(TEXTS[:3])
    assert lp[0] > lp[1] and lp[0] > lp[2]
    hard = Toxicity(threshold=0.5).log_phi(TEXTS[:3])
    assert hard.tolist() == [0.0, -math.inf, -math.inf]
    low = Toxicity(invert=True).log_phi(TEXTS[:3])
    assert low[0] < low[1]


def test_sentiment_classes():
    s = Sentiment("positive")
    assert s.label(TEXTS[:4]) == ["negative", "positive", "neutral", "negative"]
    hard = Sentiment("negative", hard=True).log_phi(TEXTS[:4])
    assert torch.isinf(hard).tolist() == [False, True, True, False]
    soft = s.log_phi(TEXTS[:4])
    assert soft[1] == soft.max()


def test_product_and_tempering_are_sums_and_scalings():
    a, b = Sentiment("positive"), Keywords(["day"], weight=0.7)
    prod = (a * b).log_phi(TEXTS)
    assert torch.allclose(prod, a.log_phi(TEXTS) + b.log_phi(TEXTS))
    assert torch.allclose((a ** 3).log_phi(TEXTS), 3 * a.log_phi(TEXTS))
    zero = (Regex("day") ** 0).log_phi(TEXTS)
    assert zero[1] == 0 and zero[0] == -math.inf  # phi^0 keeps the support


def test_spec_parsing_and_errors():
    assert parse_potential("toxicity>0.3").threshold == 0.3
    assert parse_potential("sentiment:negative").target == "negative"
    assert parse_potential("regex:a*b").regex.pattern == "a*b"  # '*' inside a regex is not a product
    for bad in ["", "bogus", "sentiment:angry", "regex:(", "toxicity>x", "toxicity>1.5"]:
        with pytest.raises(HindsightError):
            parse_potential(bad)


def test_nan_from_a_potential_is_an_error_naming_it():
    class Broken(Regex):
        def _log_phi(self, texts, tokens):
            return torch.full((len(texts),), float("nan"), dtype=torch.float64)

    with pytest.raises(HindsightError, match="regex:x"):
        Broken("x").log_phi(["a"])
