"""Ranking metrics with binary relevance: NDCG@k, MRR@k, Recall@k (the BEIR / MS-MARCO definitions).

``ranked`` is a list of document ids, best first; ``relevant`` the set of ids judged relevant.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence


def _check(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1 (got {k}).")


def ndcg_at_k(ranked: Sequence[object], relevant: Collection[object], k: int = 10) -> float:
    """DCG of the top k (gain 1 / log2(rank + 1)) over the DCG of an ideal ranking; 0 with nothing relevant."""
    _check(k)
    rel = set(relevant)
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in rel)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), k)))
    return dcg / ideal if ideal > 0 else 0.0


def mrr_at_k(ranked: Sequence[object], relevant: Collection[object], k: int = 10) -> float:
    """1 / rank of the first relevant document within the top k, else 0."""
    _check(k)
    rel = set(relevant)
    for i, d in enumerate(ranked[:k]):
        if d in rel:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[object], relevant: Collection[object], k: int) -> float:
    """The share of relevant documents found in the top k (0 with nothing relevant)."""
    _check(k)
    rel = set(relevant)
    return len(rel.intersection(ranked[:k])) / len(rel) if rel else 0.0
