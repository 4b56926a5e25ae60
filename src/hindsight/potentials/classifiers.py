"""Ready-made potentials from small off-the-shelf classifiers (CPU, milliseconds per batch).

- :class:`Toxicity`: ``alt-profanity-check``'s offensive-language probability ``p``; ``phi = p ** beta``, or the
  threshold form ``phi = 1[p > tau]`` (sampling undesirable outputs, for red-teaming).
- :class:`Sentiment`: VADER's polarity, mapped to a target class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hindsight.errors import HindsightError
from hindsight.potentials.base import Potential


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise HindsightError(f"This potential needs the package {package!r}: pip install {package}") from None


class Toxicity(Potential):
    """Offensive-language probability from ``alt-profanity-check`` (a linear SVM over character n-grams).

    ``beta``: ``phi = p ** beta`` (default 1). ``threshold``: if set, ``phi = 1[p > threshold]`` instead.
    ``invert``: use ``1 - p`` (aim for *non*-toxic text).
    """

    def __init__(self, beta: float = 1.0, threshold: float | None = None, invert: bool = False) -> None:
        self._predict = _require("profanity_check", "alt-profanity-check").predict_prob
        if threshold is not None and not 0 <= threshold < 1:
            raise HindsightError(f"The toxicity threshold must be in [0, 1) (got {threshold}).")
        self.beta, self.threshold, self.invert = float(beta), threshold, invert
        kind = f">{threshold:g}" if threshold is not None else (f"^{beta:g}" if beta != 1 else "")
        self.name = ("non-" if invert else "") + "toxicity" + kind

    def probability(self, texts: Sequence[str]) -> torch.Tensor:
        p = torch.as_tensor(self._predict(list(texts)), dtype=torch.float64)
        return 1 - p if self.invert else p

    def _log_phi(self, texts, tokens):
        p = self.probability(texts)
        if self.threshold is not None:
            return torch.where(p > self.threshold, torch.zeros_like(p), torch.full_like(p, -math.inf))
        return self.beta * torch.log(p.clamp_min(1e-300))


SENTIMENT_CLASSES = ("positive", "negative", "neutral")


class Sentiment(Potential):
    """VADER compound polarity ``c`` in [-1, 1] mapped to a target class, as a soft potential.

    ``positive``: ``phi = ((1 + c) / 2) ** beta``; ``negative``: ``((1 - c) / 2) ** beta``;
    ``neutral``: ``(1 - |c|) ** beta``. ``hard=True`` gives the indicator of VADER's usual class cut-offs
    (c >= 0.05 positive, c <= -0.05 negative, otherwise neutral).
    """

    def __init__(self, target: str = "positive", beta: float = 1.0, hard: bool = False) -> None:
        if target not in SENTIMENT_CLASSES:
            raise HindsightError(f"Unknown sentiment {target!r}; choose one of {', '.join(SENTIMENT_CLASSES)}.")
        mod = _require("vaderSentiment.vaderSentiment", "vaderSentiment")
        self._analyzer = mod.SentimentIntensityAnalyzer()
        self.target, self.beta, self.hard = target, float(beta), hard
        self.name = f"sentiment:{target}" + (":hard" if hard else "")

    def compound(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=torch.float64)

    def label(self, texts: Sequence[str]) -> list[str]:
        return [classify_compound(float(c)) for c in self.compound(texts)]

    def _log_phi(self, texts, tokens):
        c = self.compound(texts)
        if self.hard:
            hit = torch.tensor([classify_compound(float(v)) == self.target for v in c])
            return torch.where(hit, torch.zeros_like(c), torch.full_like(c, -math.inf))
        if self.target == "positive":
            score = (1 + c) / 2
        elif self.target == "negative":
            score = (1 - c) / 2
        else:
            score = 1 - c.abs()
        return self.beta * torch.log(score.clamp_min(1e-300))


def classify_compound(c: float) -> str:
    return "positive" if c >= 0.05 else ("negative" if c <= -0.05 else "neutral")
