"""The TRLM evaluations: AlpacaEval preference agreement and SciFact retrieval reranking.

Both write one JSONL record per item as soon as it is scored (``ResultFile``), keyed by the item id, holding
the *raw* scores (sum of log-likelihood and token count) of every scorer, so the summary can rank by sum or by
per-token mean without rescoring, and a rerun resumes (scoring only what is missing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hindsight.experiments.runner import Loaders, ModelExperiment
from hindsight.records.data import dataset_file, read_jsonl
from hindsight.records.ranking import mrr_at_k, ndcg_at_k, recall_at_k
from hindsight.records.stats import mean_interval, wilson_interval
from hindsight.reverse.retrieval import BM25Index, read_corpus, truncate_words

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


@dataclass
class _ScorerEval(ModelExperiment):
    """What both evaluations share: records keyed by ``id`` holding every scorer's raw scores, where a rerun
    with another scorer scores only that one and keeps the scores already recorded."""

    scorers: list[str] = field(default_factory=list)

    key_field = "id"
    task = "answer"

    def pending(self, item: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any] | None:
        done = {} if previous is None else previous.get("scores", {})
        todo = [n for n in self.scorers if n not in done]
        return {**item, "todo": todo} if previous is None or todo else None

    def merge(self, previous: dict[str, Any] | None, record: dict[str, Any]) -> dict[str, Any]:
        old = {} if previous is None else previous.get("scores", {})
        return {**record, "scores": {**old, **record["scores"]}}

    def setup(self, loaders: Loaders) -> dict[str, Any]:
        return {"scorers": {n: loaders.scorer(n, self.model, self.reverse_model, self.device, self.task)
                            for n in self.scorers}}


# ---- AlpacaEval pairwise preferences ------------------------------------------------------------------------
@dataclass
class PreferenceEval(_ScorerEval):
    """``hindsight eval preferences``: both outputs of each pair under every scorer (one batched call)."""

    scorers: list[str] = field(default_factory=lambda: ["self", "forward", "trlm-fo"])
    data: str | None = None
    limit: int | None = None

    name = "preferences"

    def items(self) -> list[dict[str, Any]]:
        return list(read_jsonl(dataset_file(*PREFERENCE_FILE, self.data), self.limit))

    def run_item(self, item: dict[str, Any]) -> dict[str, Any]:
        new: dict[str, Any] = {}
        for name in item["todo"]:
            s = self.parts["scorers"][name].score([item["instruction"]] * 2,
                                                  [item["output_1"] or " ", item["output_2"] or " "])
            new[name] = [[float(s.total[i]), int(s.tokens[i])] for i in range(2)]
        return {"id": item["id"], "preference": item["preference"], "len_1": len(item["output_1"]),
                "len_2": len(item["output_2"]), "scores": new}

    def summarise(self, records: list[dict[str, Any]]) -> list[Row]:
        return summarise_preferences(records, self.scorers)


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
@dataclass
class RetrievalEval(_ScorerEval):
    """``hindsight eval retrieval``: BM25 top ``top_k`` per claim, then every scorer's raw scores of those
    passages (one batched call per scorer)."""

    scorers: list[str] = field(default_factory=lambda: ["forward", "trlm-fo"])
    data: str | None = None
    limit: int | None = None
    top_k: int = 20
    max_words: int | None = 200

    name = "retrieval"
    task = "retrieval"

    def claims_path(self) -> Path:
        return dataset_file(SCIFACT, "claims.jsonl", self.data)

    def items(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.claims_path(), self.limit))

    def setup(self, loaders: Loaders) -> dict[str, Any]:
        parts = super().setup(loaders)
        parts["index"] = BM25Index(read_corpus(self.claims_path().parent / "corpus.jsonl"))
        return parts

    def run_item(self, item: dict[str, Any]) -> dict[str, Any]:
        hits = self.parts["index"].search(item["claim"], self.top_k)
        texts = [truncate_words(p.text, self.max_words) for p, _ in hits]
        new: dict[str, Any] = {}
        for name in item["todo"]:
            s = self.parts["scorers"][name].score([item["claim"]] * len(texts), texts)
            new[name] = [[float(t), int(k)] for t, k in zip(s.total.tolist(), s.tokens.tolist())]
        return {"id": item["id"], "relevant": [str(d) for d in item["cited_doc_ids"]],
                "bm25": [p.id for p, _ in hits], "top_k": self.top_k, "scores": new}

    def summarise(self, records: list[dict[str, Any]]) -> list[Row]:
        """Only the claims reranked from the same ``top_k`` (a file may hold runs with another one)."""
        return summarise_retrieval([r for r in records if r.get("top_k") == self.top_k], self.scorers,
                                   recall_at=sorted({5, 10, self.top_k}))


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
