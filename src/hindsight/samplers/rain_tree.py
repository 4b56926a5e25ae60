"""RAIN's search tree: token-set nodes, PUCT selection on min-max normalised values, backup with sibling sharing.

Kept free of any model so that every rule can be tested on a hand-built tree. A node's statistics are a visit
count ``n`` (fractional after similarity updates) and a value sum ``w``; ``q = w / n``. Children are created
unvisited (``n = 0``) and get a value only when a search iteration reaches them as a leaf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(eq=False)
class Node:
    """A token set appended to its parent's text. ``rollout`` is the continuation its value was judged on."""

    tokens: list[int]
    prior: float = 1.0  # raw: product of the token probabilities (normalised among siblings when used)
    parent: Node | None = None
    depth: int = 0
    text: str = ""  # decoded token set (for display)
    rollout_text: str = ""  # token set + the rollout judged on its first visit (what was embedded)
    terminal: bool = False  # ended with EOS or at the token budget
    n: float = 0.0
    w: float = 0.0
    children: list[Node] = field(default_factory=list)
    embedding: torch.Tensor | None = field(default=None, repr=False)
    kv: Any = field(default=None, repr=False)  # the search's kept keys/values of this node's first tokens (opaque)

    @property
    def q(self) -> float:
        return self.w / self.n if self.n > 0 else 0.0

    def path_tokens(self, stop: Node | None = None) -> list[int]:
        """Tokens from just below ``stop`` (default: the tree's root) down to and including this node."""
        parts, node = [], self
        while node is not None and node is not stop and node.parent is not None:
            parts.append(node.tokens)
            node = node.parent
        return [t for part in reversed(parts) for t in part]

    def to_json(self, committed: set[int] | None = None) -> dict[str, Any]:
        """Text, visits, value and prior of this node and its subtree (``committed``: ids on the chosen path)."""
        out: dict[str, Any] = {"text": self.text, "tokens": self.tokens, "visits": round(self.n, 3),
                               "value": round(self.q, 4), "prior": float(f"{self.prior:.4g}"),
                               "rollout": self.rollout_text, "terminal": self.terminal}
        if committed is not None:
            out["committed"] = id(self) in committed
        out["children"] = [c.to_json(committed) for c in self.children]
        return out


class MinMax:
    """The range of q values, used to put q on [0, 1] for PUCT.

    It starts at the whole value range [-1, 1] (as in the reference implementation) and only widens, so a
    handful of nearly equal values is not stretched over [0, 1].
    """

    def __init__(self, lo: float = -1.0, hi: float = 1.0) -> None:
        self.lo, self.hi = lo, hi

    def update(self, value: float) -> None:
        self.lo, self.hi = min(self.lo, value), max(self.hi, value)

    def normalise(self, value: float) -> float:
        if self.hi > self.lo:
            return (value - self.lo) / (self.hi - self.lo)
        return 0.5


def child_priors(node: Node, model_weight: float = 1.0) -> list[float]:
    """Sibling priors normalised to sum to one, mixed ``w * prior + (1 - w) / k`` with the uniform (the root)."""
    k = len(node.children)
    total = sum(ch.prior for ch in node.children)
    probs = [ch.prior / total if total > 0 else 1.0 / k for ch in node.children]
    return [model_weight * p + (1 - model_weight) / k for p in probs]


def puct_scores(node: Node, minmax: MinMax, c: float, model_weight: float = 1.0) -> list[float]:
    """``q_norm + c * prior * sqrt(N_parent) / (1 + n)`` for each child of ``node``; an unvisited child's
    q term is 0 (it competes on its prior alone)."""
    sqrt_n = math.sqrt(max(node.n, 0.0))
    priors = child_priors(node, model_weight)
    return [(minmax.normalise(ch.q) if ch.n > 0 else 0.0) + c * p * sqrt_n / (1 + ch.n)
            for ch, p in zip(node.children, priors)]


def select_child(node: Node, minmax: MinMax, c: float, model_weight: float = 1.0) -> Node:
    """The child with the highest PUCT score (the first one on ties)."""
    scores = puct_scores(node, minmax, c, model_weight)
    return node.children[max(range(len(scores)), key=lambda i: (scores[i], -i))]


def best_child(node: Node) -> Node:
    """The most visited child, ties broken by value: what the outer loop commits to."""
    return max(node.children, key=lambda ch: (round(ch.n, 9), ch.q))


def similar_siblings(node: Node, threshold: float) -> list[tuple[Node, float]]:
    """Siblings whose embedding has cosine above ``threshold`` with this node's (embeddings are unit norm)."""
    if node.parent is None or node.embedding is None:
        return []
    out = []
    for s in node.parent.children:
        if s is node or s.embedding is None:
            continue
        cos = float(node.embedding @ s.embedding)
        if cos > threshold:
            out.append((s, cos))
    return out


def backup(leaf: Node, value: float, minmax: MinMax, *, stop: Node | None = None, sim_threshold: float = 0.95,
           sim_weight: float = 0.2) -> None:
    """Add ``value`` to the running mean of every node from ``leaf`` up to ``stop`` (inclusive), and share it.

    Sharing: each updated node's siblings with cosine > ``sim_threshold`` get ``sim_weight`` of a visit with the
    same value, so near-duplicate token sets learn from each other's evaluations.
    """
    node: Node | None = leaf
    while node is not None:
        node.n += 1
        node.w += value
        minmax.update(node.q)
        if node is not stop and sim_weight > 0:
            for s, _ in similar_siblings(node, sim_threshold):
                s.n += sim_weight
                s.w += sim_weight * value
                minmax.update(s.q)
        if node is stop:
            break
        node = node.parent


def mean_pairwise_cosine(nodes: list[Node]) -> float:
    """How alike a set of siblings is (1.0 = identical embeddings); 0 when there are fewer than two."""
    embs = [ch.embedding for ch in nodes if ch.embedding is not None]
    if len(embs) < 2:
        return 0.0
    e = torch.stack(embs)
    sim = e @ e.T
    k = e.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (k * (k - 1)))
