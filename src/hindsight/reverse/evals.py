"""The TRLM evaluations: AlpacaEval preference agreement and SciFact retrieval reranking.

Both write one JSONL record per item as soon as it is scored (``ResultFile``), keyed by the item id, holding
the *raw* scores (sum of log-likelihood and token count) of every scorer, so the summary can rank by sum or by
per-token mean without rescoring, and a rerun resumes (scoring only what is missing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hindsight.evaluation.ranking import mrr_at_k, ndcg_at_k, recall_at_k
from hindsight.evaluation.results import ResultFile
from hindsight.evaluation.stats import mean_interval, wilson_interval
from hindsight.reverse.retrieval import BM25Index, truncate_words
from hindsight.reverse.scorers import PairScorer

PREFERENCE_FILE = ("alpaca_eval", "pairwise_preferences_alpaca7b_vs_text_davinci_003.jsonl")
SCIFACT = "scifact_retrieval"


@dataclass
class Row:
    """One line of a results table: a system, what it scored, how many items, the value and its interval."""

    system: str
    metric: str
    n: int
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "metric": self.metric, "n": self.n, "value": self.value,
                "low": self.low, "high": self.high}


def _missing(rf: ResultFile, key: str, names: Iterable[str]) -> list[str]:
    rec = rf.records.get(str(key))
    return [n for n in names if rec is None or n not in rec.get("scores", {})]


def _merge(rf: ResultFile, base: dict[str, Any], new_scores: dict[str, Any]) -> None:
    old = rf.records.get(str(base["id"]), {})
    rf.append({**base, "scores": {**old.get("scores", {}), **new_scores}})


# ---- AlpacaEval pairwise preferences ------------------------------------------------------------------------
def run_preferences(records: Sequence[dict], scorers: dict[str, PairScorer], rf: ResultFile, *,
                    on_item: Callable[[], None] | None = None) -> None:
    """Score both outputs of each pair under every scorer (the two outputs in one batched call)."""
    for rec in records:
        todo = _missing(rf, rec["id"], scorers)
        new: dict[str, Any] = {}
        for name in todo:
            s = scorers[name].score([rec["instruction"]] * 2, [rec["output_1"] or " ", rec["output_2"] or " "])
            new[name] = [[float(s.total[i]), int(s.tokens[i])] for i in range(2)]
        if todo:
            base = {"id": rec["id"], "preference": rec["preference"], "len_1": len(rec["output_1"]),
                    "len_2": len(rec["output_2"])}
            _merge(rf, base, new)
        if on_item:
            on_item()


def summarise_preferences(results: Sequence[dict], names: Sequence[str]) -> list[Row]:
    """Agreement with GPT-4's verdict (draws left out), per scorer by sum and by mean, beside baselines."""
    decided = [r for r in results if r["preference"] in (1.0, 2.0, 1, 2)]
    n = len(decided)
    rows: list[Row] = []

    def add(system: str, picks: list[int]) -> None:
        k = sum(int(p == int(r["preference"])) for p, r in zip(picks, decided))
        lo, hi = wilson_interval(k, n)
        rows.append(Row(system, "agreement", n, k / n if n else float("nan"), lo, hi))

    ones = sum(int(r["preference"]) == 1 for r in decided)
    majority = 1 if ones >= n - ones else 2
    add(f"majority class (always output {majority})", [majority] * n)
    add("longer output", [1 if r["len_1"] >= r["len_2"] else 2 for r in decided])
    for name in names:
        have = [r for r in decided if name in r["scores"]]
        if len(have) != n:
            continue
        for variant in ("sum", "mean"):
            picks = []
            for r in decided:
                (t1, k1), (t2, k2) = r["scores"][name]
                v1, v2 = (t1, t2) if variant == "sum" else (t1 / max(k1, 1), t2 / max(k2, 1))
                picks.append(1 if v1 >= v2 else 2)
            add(f"{name} ({variant})", picks)
    return rows


# ---- SciFact retrieval ---------------------------------------------------------------------------------------
def run_retrieval(claims: Sequence[dict], index: BM25Index, scorers: dict[str, PairScorer], rf: ResultFile, *,
                  top_k: int = 20, max_words: int | None = 200, on_item: Callable[[], None] | None = None) -> None:
    """BM25 top ``top_k`` per claim, then every scorer's raw scores of those passages (one batched call)."""
    for claim in claims:
        hits = index.search(claim["claim"], top_k)
        todo = _missing(rf, claim["id"], scorers)
        texts = [truncate_words(p.text, max_words) for p, _ in hits]
        new: dict[str, Any] = {}
        for name in todo:
            s = scorers[name].score([claim["claim"]] * len(texts), texts)
            new[name] = [[float(t), int(k)] for t, k in zip(s.total.tolist(), s.tokens.tolist())]
        if todo or str(claim["id"]) not in rf:
            base = {"id": claim["id"], "relevant": [str(d) for d in claim["cited_doc_ids"]],
                    "bm25": [p.id for p, _ in hits],
                    "bm25_scores": [round(float(s), 6) for _, s in hits], "top_k": top_k}
            _merge(rf, base, new)
        if on_item:
            on_item()


def _ranked(rec: dict, name: str, variant: str) -> list[str]:
    ids = rec["bm25"]
    vals = [t if variant == "sum" else t / max(k, 1) for t, k in rec["scores"][name]]
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: -vals[i])]


def summarise_retrieval(results: Sequence[dict], names: Sequence[str], variants: Sequence[str] = ("sum", "mean"),
                        recall_at: Sequence[int] = (5, 20)) -> list[Row]:
    """NDCG@10, MRR@10 and Recall@K with 95% intervals (normal approximation over claims, clipped to [0, 1]),
    for BM25 alone and each reranker (sum/mean)."""
    rows: list[Row] = []
    n = len(results)

    def add(system: str, rankings: list[list[str]]) -> None:
        metrics: list[tuple[str, Callable[[list[str], list[str]], float]]] = [
            ("NDCG@10", lambda r, rel: ndcg_at_k(r, rel, 10)), ("MRR@10", lambda r, rel: mrr_at_k(r, rel, 10))]
        metrics += [(f"Recall@{k}", lambda r, rel, k=k: recall_at_k(r, rel, k)) for k in recall_at]
        for metric, fn in metrics:
            m, lo, hi = mean_interval([fn(rk, rec["relevant"]) for rk, rec in zip(rankings, results)])
            rows.append(Row(system, metric, n, m, max(0.0, lo), min(1.0, hi)))  # the metrics live in [0, 1]

    add("BM25", [rec["bm25"] for rec in results])
    for name in names:
        if not all(name in rec["scores"] for rec in results):
            continue
        for variant in variants:
            add(f"{name} ({variant})", [_ranked(rec, name, variant) for rec in results])
    return rows
