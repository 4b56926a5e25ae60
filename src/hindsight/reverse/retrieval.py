"""Retrieval reranking: a BM25 first stage (``bm25s``) returns the top K passages, then a pair scorer reorders
them: ``score(query | passage)`` for TRLM scorers, ``score(passage | query)`` for the forward ones (the
direction is the scorer's template, see ``scorers.PROMPTS["retrieval"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hindsight.errors import HindsightError
from hindsight.records.data import read_jsonl, read_text
from hindsight.records.ranking import ndcg_at_k
from hindsight.reverse.fusion import AlphaFit, Query, fit_alpha, fuse
from hindsight.reverse.scorers import PairScorer


@dataclass(frozen=True)
class Passage:
    id: str
    text: str


TEXT_FIELDS = ("text", "abstract", "passage", "body", "contents", "content")  # a record's text: the first given
ID_FIELDS = ("doc_id", "id", "_id", "docid")


def passage_text(rec: dict) -> str:
    """Title and body of a corpus record (SciFact keeps the abstract as a list of sentences); the body is the
    first non-empty field of :data:`TEXT_FIELDS`."""
    body = next((rec[k] for k in TEXT_FIELDS if rec.get(k) not in (None, "", [])), "")
    if isinstance(body, list):
        body = " ".join(str(b) for b in body)
    body = str(body).strip()
    title = str(rec.get("title") or "").strip()
    if not title:
        return body
    if not body:
        return title
    return f"{title} {body}" if title.endswith((".", "?", "!")) else f"{title}. {body}"


def read_corpus(path: str | Path) -> list[Passage]:
    """A corpus file: JSONL (an id field ``doc_id``/``id``/``_id`` and the text under one of
    :data:`TEXT_FIELDS`, with an optional ``title``) or plain text with one passage per line (ids are line
    numbers). A record with no text is an error naming it, never an empty passage; so is a binary file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise HindsightError(f"The corpus file {path} does not exist.")
    passages: list[Passage] = []
    if p.suffix == ".jsonl":
        for n, rec in enumerate(read_jsonl(p), 1):
            if not isinstance(rec, dict):
                raise HindsightError(f"The corpus file {path}: record {n} is not a JSON object.")
            pid = next((rec[k] for k in ID_FIELDS if k in rec), n - 1)
            text = passage_text(rec)
            if not text:
                what = "an empty text" if any(k in rec for k in (*TEXT_FIELDS, "title")) else (
                    f"no text field (expected one of {', '.join(TEXT_FIELDS)} or title)")
                raise HindsightError(f"The corpus file {path}: record {n} (id {pid}) has {what}.")
            passages.append(Passage(str(pid), text))
    else:
        lines = read_text(p, "corpus").splitlines()
        passages = [Passage(str(n), line.strip()) for n, line in enumerate(lines) if line.strip()]
    if not passages:
        raise HindsightError(f"The corpus file {path} holds no passages.")
    return passages


class BM25Index:
    """A BM25 index over passages (bm25s, English stop words removed)."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        import bm25s

        self.passages = list(passages)
        self._bm25s = bm25s
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize([p.text for p in self.passages], stopwords="en", show_progress=False),
                             show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[Passage, float]]:
        k = min(k, len(self.passages))
        tokens = self._bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids or not tokens.ids[0]:
            return [(p, 0.0) for p in self.passages[:k]]  # nothing to match on: corpus order
        docs, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        return [(self.passages[int(i)], float(s)) for i, s in zip(docs[0], scores[0])]


def truncate_words(text: str, max_words: int | None) -> str:
    """The first ``max_words`` words (long passages cost quadratic time and rarely change the ranking)."""
    if not max_words:
        return text
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])


def rerank(scorer: PairScorer, query: str, passages: Sequence[Passage], *, normalise: bool = False,
           max_words: int | None = None) -> list[float]:
    """One score per passage (higher is better), from one batched scoring call."""
    if not passages:
        return []
    texts = [truncate_words(p.text, max_words) for p in passages]
    return scorer.score([query] * len(texts), texts).pick(normalise).tolist()


def retrieve(query: str, index: BM25Index, *, top_k: int = 20, scorer: PairScorer | None = None,
             normalise: bool = False, max_words: int | None = None, fusion: str | None = None,
             alpha: float = 0.5) -> list[dict]:
    """BM25 top ``top_k``, reranked by ``scorer`` when given (its scores fused with BM25's when ``fusion`` names
    a method of :mod:`hindsight.reverse.fusion`); each hit: rank, id, bm25, score, text (and reranker)."""
    if top_k < 1:
        raise HindsightError(f"--top-k must be at least 1 (got {top_k}).")
    if not query.strip():
        raise HindsightError("The query is empty.")
    if fusion is not None and scorer is None:
        raise HindsightError("Fusion needs a reranker: pass --scorer too.")
    hits = index.search(query, top_k)
    bm25 = [s for _, s in hits]
    reranked = None if scorer is None else rerank(scorer, query, [p for p, _ in hits], normalise=normalise,
                                                  max_words=max_words)
    scores = bm25 if reranked is None else reranked if fusion is None else fuse(bm25, reranked, fusion, alpha)
    order = sorted(range(len(hits)), key=lambda i: -scores[i])  # stable: BM25 order breaks ties
    out = []
    for r, i in enumerate(order):
        hit = {"rank": r + 1, "id": hits[i][0].id, "bm25": hits[i][1], "score": scores[i], "text": hits[i][0].text}
        if fusion is not None:
            hit["reranker"] = reranked[i]
        out.append(hit)
    return out


def read_dev_queries(path: str | Path) -> list[tuple[str, list[str]]]:
    """Development queries with their relevant passage ids, for choosing a fusion weight: JSONL with the query
    under ``query``/``claim``/``question`` and the ids under ``relevant``/``cited_doc_ids`` (SciFact's claims file
    is such a file)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise HindsightError(f"The development queries file {path} does not exist.")
    out = []
    for n, rec in enumerate(read_jsonl(p)):
        query = next((rec[k] for k in ("query", "claim", "question") if isinstance(rec.get(k), str)), None)
        relevant = next((rec[k] for k in ("relevant", "cited_doc_ids") if isinstance(rec.get(k), list)), None)
        if query is None or relevant is None:
            raise HindsightError(f"{path}, record {n + 1}: a development query needs a 'query' (or 'claim') text "
                                 "and a 'relevant' (or 'cited_doc_ids') list of passage ids.")
        out.append((query, [str(d) for d in relevant]))
    if not out:
        raise HindsightError(f"The development queries file {path} holds no queries.")
    return out


def fit_retrieval_alpha(dev: Sequence[tuple[str, Sequence[str]]], index: BM25Index, scorer: PairScorer, *,
                        method: str, top_k: int = 20, normalise: bool = False, max_words: int | None = None,
                        folds: int = 5, seed: int = 0) -> AlphaFit:
    """Choose the fusion weight on the user's development queries (best mean NDCG@10 of the fused top
    ``top_k``, with a k-fold cross-validated estimate), to be applied unchanged to new queries."""
    queries = []
    for query, relevant in dev:
        hits = index.search(query, top_k)
        second = rerank(scorer, query, [p for p, _ in hits], normalise=normalise, max_words=max_words)
        queries.append(Query([p.id for p, _ in hits], [s for _, s in hits], second, list(relevant)))
    return fit_alpha(queries, lambda r, rel: ndcg_at_k(r, rel, 10), method=method, folds=folds, seed=seed)
