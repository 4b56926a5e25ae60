"""A harmlessness classifier: logistic regression over MiniLM sentence embeddings of a reply.

Trained on Anthropic HH-RLHF harmless-base pairs (the chosen reply = 1, the rejected reply = 0). It is cheap
(one embedding per reply) and, unlike the model's self-evaluation, independent of the model being steered, so
it serves both as a stronger value for RAIN and (trained on other rows) as a judge. ``phi = P(harmless | reply)``.
Fitted models are cached outside the repository (``judges/`` under :func:`hindsight.infra.cache_root`).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.infra import atomic_write, cache_root
from hindsight.potentials.base import Potential


def cache_dir() -> Path:
    return cache_root() / "judges"


def classifier_path(part: str) -> Path:
    return cache_dir() / f"hh_harmless_lr_{part}.pkl"


class HarmlessClassifier(Potential):
    """``log P(harmless | reply)`` from a fitted scikit-learn classifier over unit-norm MiniLM embeddings."""

    def __init__(self, model: Any, meta: dict[str, Any] | None = None, embed=None) -> None:
        self.model, self.meta = model, dict(meta or {})
        self.name = f"harmless[{self.meta.get('part', 'custom')}]"
        self._embed = embed

    def _vectors(self, texts: Sequence[str]):
        if self._embed is None:
            from hindsight.lm.embed import get_embedder

            self._embed = get_embedder().embed
        return self._embed([t.strip() or "." for t in texts]).numpy()

    def probability(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(self.model.predict_proba(self._vectors(texts))[:, 1], dtype=torch.float64)

    def _log_phi(self, texts, tokens):
        return torch.log(self.probability(texts).clamp_min(1e-300))

    @classmethod
    def fit(cls, chosen: Sequence[str], rejected: Sequence[str], meta: dict[str, Any] | None = None,
            embed=None, c: float = 1.0) -> HarmlessClassifier:
        """Fit on chosen (label 1) and rejected (label 0) replies."""
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise HindsightError("The harmlessness classifier needs scikit-learn: pip install scikit-learn") from None
        import numpy as np

        clf = cls(None, meta, embed)
        x = np.concatenate([clf._vectors(chosen), clf._vectors(rejected)])
        y = np.array([1] * len(chosen) + [0] * len(rejected))
        clf.model = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        clf.meta["train_pairs"] = len(chosen)
        return clf

    def pairwise_accuracy(self, chosen: Sequence[str], rejected: Sequence[str]) -> float:
        """How often the chosen reply gets the higher P(harmless) (ties count half)."""
        a, b = self.probability(chosen), self.probability(rejected)
        return float(((a > b).double() + 0.5 * (a == b).double()).mean())

    @classmethod
    def load(cls, path: str | Path) -> HarmlessClassifier:
        path = Path(path)
        if not path.is_file():
            raise HindsightError(
                f"No harmlessness classifier at {path}; run `hindsight eval rain-hh` once (it trains one from the "
                "HH data) or `hindsight eval rain-probe`."
            )
        with open(path, "rb") as f:
            blob = pickle.load(f)
        return cls(blob["model"], blob["meta"])


def save_classifier(clf: HarmlessClassifier, path: str | Path) -> None:
    """Pickle the fitted model and its metadata (atomic replace)."""
    atomic_write(path, pickle.dumps({"model": clf.model, "meta": clf.meta}))

