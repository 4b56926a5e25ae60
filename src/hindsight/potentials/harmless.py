"""A harmlessness classifier: logistic regression over MiniLM sentence embeddings of a reply.

Trained on Anthropic HH-RLHF harmless-base pairs (the chosen reply = 1, the rejected reply = 0). It is cheap
(one embedding per reply) and, unlike the model's self-evaluation, independent of the model being steered, so
it serves both as a stronger value for RAIN and (trained on other rows) as a judge. ``phi = P(harmless | reply)``.
Fitted models are cached outside the repository (``judges/`` under :func:`hindsight.infra.cache_root`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hindsight.errors import HindsightError
from hindsight.infra import atomic_write, cache_root
from hindsight.potentials.base import Potential

NAME = re.compile(r"[A-Za-z0-9_-]+")


def cache_dir() -> Path:
    return cache_root() / "judges"


def classifier_path(part: str) -> Path:
    """Where the classifier named ``part`` lives; the name must be letters, digits, ``_`` or ``-``."""
    if not NAME.fullmatch(part or ""):
        raise HindsightError(f"A classifier name must match [A-Za-z0-9_-]+ (got {part!r}).")
    return cache_dir() / f"hh_harmless_lr_{part}.npz"


class LinearProbability:
    """``P(label 1 | x) = sigmoid(x . w + b)``: a fitted logistic regression as two plain arrays."""

    def __init__(self, weight: np.ndarray, bias: float) -> None:
        self.weight, self.bias = np.asarray(weight, dtype=np.float64).reshape(-1), float(bias)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.weight.shape[0]:
            raise HindsightError(f"The classifier expects {self.weight.shape[0]}-dimensional embeddings, "
                                 f"got shape {tuple(x.shape)}.")
        p1 = 1.0 / (1.0 + np.exp(-(x @ self.weight + self.bias)))
        return np.stack([1.0 - p1, p1], axis=1)


class HarmlessClassifier(Potential):
    """``log P(harmless | reply)`` from a logistic regression over unit-norm MiniLM embeddings."""

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
        fitted = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        sign = 1.0 if int(fitted.classes_[1]) == 1 else -1.0
        clf.model = LinearProbability(sign * fitted.coef_[0], sign * float(fitted.intercept_[0]))
        clf.meta["train_pairs"] = len(chosen)
        return clf

    def pairwise_accuracy(self, chosen: Sequence[str], rejected: Sequence[str]) -> float:
        """How often the chosen reply gets the higher P(harmless) (ties count half)."""
        a, b = self.probability(chosen), self.probability(rejected)
        return float(((a > b).double() + 0.5 * (a == b).double()).mean())

    @classmethod
    def load(cls, path: str | Path) -> HarmlessClassifier:
        """Read the arrays (``.npz``, no pickle) and the metadata (``.json`` beside it)."""
        path = Path(path)
        if not path.is_file():
            raise HindsightError(
                f"No harmlessness classifier at {path}; run `hindsight eval rain-hh` once (it trains one from the "
                "HH data) or `hindsight eval rain-probe`."
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                weight, bias = z["weight"], float(np.asarray(z["bias"]).reshape(-1)[0])
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
            raise HindsightError(f"{path} is not a readable classifier ({type(e).__name__}); delete it and "
                                 "train it again.") from None
        if weight.ndim != 1 or not np.isfinite(weight).all() or not np.isfinite(bias) or not isinstance(meta, dict):
            raise HindsightError(f"{path} is not a valid classifier (bad weights or metadata); delete it.")
        return cls(LinearProbability(weight, bias), meta)


def save_classifier(clf: HarmlessClassifier, path: str | Path) -> None:
    """Save the weights as plain arrays (``.npz``) and the metadata as ``.json`` (each an atomic replace)."""
    path = Path(path)
    buf = io.BytesIO()
    np.savez(buf, weight=clf.model.weight, bias=np.array([clf.model.bias]))
    atomic_write(path.with_suffix(".json"), json.dumps(clf.meta, indent=1))
    atomic_write(path, buf.getvalue())
