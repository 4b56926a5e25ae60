"""Citation attribution: which article sentence(s) a summary sentence came from, by reverse scoring.

Every search asks a pair scorer for ``score(summary sentence | article text)`` (with the citation templates,
TRLM-Fo reads the article text and then scores the summary sentence) and differs in which texts it offers:

- ``linear``:    every sentence on its own, in one batched call; the best-scoring sentence wins.
- ``binary``:    the two halves of the current span as blocks, keeping the better one, until one sentence is
                 left: ``ceil(log2 n)`` calls of two pairs each.
- ``exclusion``: the whole article with one sentence left out, for every sentence; the sentence whose removal
                 lowers the score most wins (one batched call of ``n + 1`` pairs, the full article included).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from hindsight.errors import HindsightError

SEARCHES = ("linear", "binary", "exclusion")


class Scorer(Protocol):
    """Anything with the pair-scorer interface (:class:`hindsight.reverse.scorers.PairScorer` or a test stub)."""

    def score(self, queries: Sequence[str], responses: Sequence[str]): ...


# ---- sentence splitting ---------------------------------------------------------------------------------------
_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]*[A-Z0-9])")
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "mt", "gen", "col", "lt", "sgt", "capt", "rev",
    "gov", "sen", "rep", "inc", "ltd", "co", "corp", "no", "u.s", "u.k", "e.g", "i.e", "etc", "jan", "feb",
    "aug", "sept", "oct", "nov", "dec",
}


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: a break after . ! ? (and closing quotes) before a capital or digit, and at newlines.

    Common abbreviations (Mr., Dr., U.S.) and single-letter initials do not end a sentence.
    """
    sentences: list[str] = []
    for block in re.split(r"\s*\n\s*", text.strip()):
        start = 0
        for m in _END.finditer(block):
            if block[m.start()] == ".":
                word = block[start:m.start()].split()[-1:] or [""]
                word = word[0].lstrip("\"'“‘([").lower()
                if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                    continue
            sentences.append(block[start:m.end()].strip())
            start = m.end()
        sentences.append(block[start:].strip())
    return [s for s in sentences if s]


# ---- searches ---------------------------------------------------------------------------------------------------
@dataclass
class Attribution:
    """The sentence a search chose, the scores it saw, and what it cost (scorer calls and pairs scored)."""

    search: str
    index: int
    scores: list[float] = field(default_factory=list)  # linear: per sentence; exclusion: drop per sentence
    path: list[tuple[int, int]] = field(default_factory=list)  # binary: the spans kept, [start, end)
    calls: int = 0
    pairs: int = 0

    def as_dict(self) -> dict:
        return {"search": self.search, "index": self.index, "scores": self.scores,
                "path": [list(p) for p in self.path], "calls": self.calls, "pairs": self.pairs}


def _totals(scorer: Scorer, summary: str, texts: list[str]) -> list[float]:
    total = scorer.score([summary] * len(texts), texts).total
    return [float(v) for v in torch.as_tensor(total)]


def _block(sentences: Sequence[str], idx: Sequence[int]) -> str:
    return " ".join(sentences[i] for i in idx)


def linear_search(scorer: Scorer, summary: str, sentences: Sequence[str]) -> Attribution:
    """Score every sentence on its own (one batched call) and take the best."""
    scores = _totals(scorer, summary, list(sentences))
    best = max(range(len(scores)), key=scores.__getitem__)
    return Attribution("linear", best, scores=scores, calls=1, pairs=len(scores))


def binary_search(scorer: Scorer, summary: str, sentences: Sequence[str]) -> Attribution:
    """Halve the span, score each half as one block, keep the better half; ``ceil(log2 n)`` calls."""
    lo, hi = 0, len(sentences)
    result = Attribution("binary", 0)
    while hi - lo > 1:
        mid = (lo + hi + 1) // 2  # the left half takes the odd one out, so depth is ceil(log2 n)
        left, right = _totals(scorer, summary, [_block(sentences, range(lo, mid)), _block(sentences, range(mid, hi))])
        result.calls += 1
        result.pairs += 2
        lo, hi = (lo, mid) if left >= right else (mid, hi)
        result.path.append((lo, hi))
    result.index = lo
    return result


def exclusion_search(scorer: Scorer, summary: str, sentences: Sequence[str]) -> Attribution:
    """Leave each sentence out of the whole article; the one whose absence costs the most score wins.

    ``scores[i]`` is the drop ``score(full) - score(without i)`` (larger = the sentence mattered more).
    """
    n = len(sentences)
    if n == 1:
        return Attribution("exclusion", 0, scores=[0.0])
    texts = [_block(sentences, range(n))] + [_block(sentences, [j for j in range(n) if j != i]) for i in range(n)]
    full, *without = _totals(scorer, summary, texts)
    drops = [full - w for w in without]
    best = max(range(n), key=drops.__getitem__)
    return Attribution("exclusion", best, scores=drops, calls=1, pairs=n + 1)


_SEARCH_FUNCTIONS = {"linear": linear_search, "binary": binary_search, "exclusion": exclusion_search}


def attribute(scorer: Scorer, summary: str, sentences: Sequence[str], search: str = "linear") -> Attribution:
    """The source sentence of one summary sentence among ``sentences`` by the named search."""
    if search not in _SEARCH_FUNCTIONS:
        raise HindsightError(f"Unknown search {search!r}; choose one of {', '.join(SEARCHES)}.")
    if not summary.strip():
        raise HindsightError("The summary sentence is empty.")
    if not sentences:
        raise HindsightError("The article has no sentences.")
    return _SEARCH_FUNCTIONS[search](scorer, summary, sentences)


def cite(scorer: Scorer, summary: str, article: str, search: str = "linear") -> list[tuple[str, Attribution]]:
    """Split summary and article into sentences and attribute every summary sentence."""
    sentences = split_sentences(article)
    if not sentences:
        raise HindsightError("The article is empty.")
    parts = split_sentences(summary)
    if not parts:
        raise HindsightError("The summary is empty.")
    return [(s, attribute(scorer, s, sentences, search)) for s in parts]
