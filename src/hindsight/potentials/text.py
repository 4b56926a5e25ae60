"""Potentials on the surface text, for quick demos and tests: regular expressions and keywords."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from hindsight.errors import HindsightError
from hindsight.potentials.base import Potential


class Regex(Potential):
    """``phi = 1`` if the pattern matches anywhere in the text (``re.search``), else ``penalty`` (default 0)."""

    def __init__(self, pattern: str, penalty: float = 0.0, flags: int = re.IGNORECASE) -> None:
        try:
            self.regex = re.compile(pattern, flags)
        except re.error as e:
            raise HindsightError(f"Invalid regular expression {pattern!r}: {e}.") from None
        if not 0 <= penalty <= 1:
            raise HindsightError(f"The regex penalty must be in [0, 1] (got {penalty}).")
        self.log_miss = math.log(penalty) if penalty > 0 else -math.inf
        self.name = f"regex:{pattern}"

    def _log_phi(self, texts, tokens):
        hit = torch.tensor([bool(self.regex.search(t)) for t in texts])
        return torch.where(hit, torch.zeros(len(texts), dtype=torch.float64),
                           torch.full((len(texts),), self.log_miss, dtype=torch.float64))


class Keywords(Potential):
    """``phi = exp(weight * number of keyword occurrences)``: a soft pull towards (or, negative, away from) words."""

    def __init__(self, words: Sequence[str], weight: float = 1.0) -> None:
        words = [w.strip() for w in words if w.strip()]
        if not words:
            raise HindsightError("The keyword potential needs at least one keyword.")
        self.regex = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
        self.weight = float(weight)
        self.name = "keywords:" + ",".join(words)

    def _log_phi(self, texts, tokens):
        return torch.tensor([self.weight * len(self.regex.findall(t)) for t in texts], dtype=torch.float64)
