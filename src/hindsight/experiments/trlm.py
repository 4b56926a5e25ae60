"""The TRLM evaluations: AlpacaEval preference agreement and SciFact retrieval reranking.

Both write one JSONL record per item as soon as it is scored (``ResultFile``), keyed by the item id, holding
the *raw* scores (sum of log-likelihood and token count) of every scorer, so the summary can rank by sum or by
per-token mean without rescoring, and a rerun resumes (scoring only what is missing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hindsight.errors import HindsightError
from hindsight.experiments.compare import (Fusion, fit_fusion, preference_comparison, preference_picks,
                                           recall_ceiling, retrieval_paired, retrieval_rankings)
from hindsight.experiments.runner import Loaders, ModelExperiment
from hindsight.records.data import dataset_file, read_jsonl
from hindsight.records.ranking import mrr_at_k, ndcg_at_k, recall_at_k
from hindsight.records.stats import mean_interval, wilson_interval
from hindsight.reverse.retrieval import BM25Index, read_corpus, truncate_words

PREFERENCE_FILE = ("alpaca_eval", "pairwise_preferences_alpaca7b_vs_text_davinci_003.jsonl")
SCIFACT = "scifact_retrieval"
VARIANTS = ("sum", "mean")


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
    provenance_ignores = ("scorers",)  # a record keeps each scorer's scores apart; another scorer adds its own

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

    def summarise(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Agreement rows, the paired table against the strongest baseline, and length-controlled agreement."""
        decided = _decided(records)
        return {"rows": summarise_preferences(records, self.scorers),
                **preference_comparison(decided, preference_picks(decided, self.scorers))}


def _decided(results: Sequence[dict]) -> list[dict]:
    return [r for r in results if r["preference"] in (1.0, 2.0, 1, 2)]


def summarise_preferences(results: Sequence[dict], names: Sequence[str]) -> list[Row]:
    """Agreement with GPT-4's verdict (draws left out), per scorer by sum and by mean, beside baselines."""
    decided = _decided(results)
    n = len(decided)
    rows: list[Row] = []
    for system, picks in preference_picks(decided, names).items():
        k = sum(int(p == int(r["preference"])) for p, r in zip(picks, decided))
        lo, hi = wilson_interval(k, n)
        rows.append(Row(system, "agreement", n, k / n if n else float("nan"), lo, hi))
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
    fusion: str | None = None
    alpha: float | None = None
    fit_alpha: str | None = None
    folds: int = 5

    name = "retrieval"
    task = "retrieval"
    provenance_ignores = ("scorers", "fusion", "alpha", "fit_alpha", "folds")  # the summary's, not a record's

    def claims_path(self) -> Path:
        return dataset_file(SCIFACT, "claims.jsonl", self.data)

    def items(self) -> list[dict[str, Any]]:
        """The first ``limit`` claims without the development claims, then the development claims."""
        dev = self.dev_claims()
        dev_ids = {str(c["id"]) for c in dev}
        return [c for c in read_jsonl(self.claims_path(), self.limit) if str(c["id"]) not in dev_ids] + dev

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
                "bm25": [p.id for p, _ in hits], "bm25_scores": [round(float(s), 6) for _, s in hits],
                "top_k": self.top_k, "scores": new}

    def summarise(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows per system (BM25, rerankers, fusions), paired tables, the recall ceiling and the alpha fits.

        Only the claims reranked from the same ``top_k`` count (a file may hold runs with another one); the
        development claims of ``fit_alpha`` choose alpha and are left out of everything else.
        """
        recs = [r for r in records if r.get("top_k") == self.top_k]
        dev_ids = {str(c["id"]) for c in self.dev_claims()}
        evals = [r for r in recs if str(r["id"]) not in dev_ids]
        names = [n for n in self.scorers if evals and all(n in r["scores"] for r in evals)]
        fusions, fits = self.fusions([r for r in recs if str(r["id"]) in dev_ids], names)
        rankings = [retrieval_rankings(r, names, VARIANTS, fusions) for r in evals]
        baselines = ["BM25"] + [f"forward ({v})" for v in VARIANTS]
        return {"rows": summarise_retrieval(evals, names, recall_at=sorted({5, 10, self.top_k}), fusions=fusions),
                "paired": retrieval_paired(rankings, [r["relevant"] for r in evals], baselines=baselines)
                if evals else [],
                "ceiling": recall_ceiling(evals), "fits": fits, "claims": len(evals), "dev_claims": len(dev_ids)}

    def pending(self, item: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any] | None:
        """Also redo the (cheap) BM25 stage of records written before they kept its scores, for fusion."""
        work = super().pending(item, previous)
        return {**item, "todo": []} if work is None and "bm25_scores" not in previous else work

    def __post_init__(self) -> None:
        super().__post_init__()
        self._dev_rows()  # a malformed --fit-alpha is one sentence before any data is looked for

    def _dev_rows(self) -> tuple[int, int | None] | None:
        """``fit_alpha`` as a row range (None: no fit, or a claims file); one sentence if it is neither."""
        spec = self.fit_alpha
        if not spec or Path(spec).expanduser().is_file():
            return None
        m = re.fullmatch(r"(\d*):(\d*)", spec.strip())
        if not m:
            raise HindsightError(f"--fit-alpha takes a claims file or a row range START:STOP (got {spec!r}).")
        start, stop = int(m[1] or 0), int(m[2]) if m[2] else None
        if stop is not None and stop <= start:
            raise HindsightError(f"--fit-alpha {spec} is an empty row range (STOP must be above START).")
        return start, stop

    def dev_claims(self) -> list[dict[str, Any]]:
        """The development claims of ``fit_alpha``: a claims JSONL file, or ``START:STOP`` rows of the claims file."""
        spec = self.fit_alpha
        if not spec:
            return []
        rows_range = self._dev_rows()
        if rows_range is None:
            return list(read_jsonl(Path(spec).expanduser()))
        start, stop = rows_range
        rows = list(read_jsonl(self.claims_path()))[start:stop]
        if not rows:
            raise HindsightError(f"--fit-alpha {spec} selects no claims (the claims file has fewer rows).")
        return rows

    def fusions(self, dev: Sequence[dict], names: Sequence[str]) -> tuple[list[Fusion], list[dict[str, Any]]]:
        """One fusion per reranker and variant: alpha fitted on ``dev`` with ``fit_alpha``, else ``alpha``."""
        if self.fusion is None:
            return [], []
        out, fits = [], []
        for name in names:
            for variant in VARIANTS:
                if self.fit_alpha:
                    fit = fit_fusion(dev, name, variant, self.fusion, folds=self.folds)
                    fits.append({"system": f"{name} ({variant})", "dev": self.fit_alpha, **fit.as_dict()})
                    alpha = fit.alpha
                else:
                    alpha = 0.5 if self.alpha is None else self.alpha
                out.append(Fusion(name, variant, self.fusion, alpha))
        return out, fits


def summarise_retrieval(results: Sequence[dict], names: Sequence[str], variants: Sequence[str] = VARIANTS,
                        recall_at: Sequence[int] = (5, 20), fusions: Sequence[Fusion] = ()) -> list[Row]:
    """NDCG@10, MRR@10 and Recall@K with 95% intervals (normal approximation over claims, clipped to [0, 1]),
    for BM25 alone, each reranker (sum/mean) and each fusion."""
    names = [n for n in names if all(n in rec["scores"] for rec in results)]
    metrics: list[tuple[str, Callable[[list[str], list[str]], float]]] = [
        ("NDCG@10", lambda r, rel: ndcg_at_k(r, rel, 10)), ("MRR@10", lambda r, rel: mrr_at_k(r, rel, 10))]
    metrics += [(f"Recall@{k}", lambda r, rel, k=k: recall_at_k(r, rel, k)) for k in recall_at]
    rankings = [retrieval_rankings(rec, names, variants, fusions) for rec in results]
    rows: list[Row] = []
    for system in (rankings[0] if rankings else {"BM25": None}):
        for metric, fn in metrics:
            m, lo, hi = mean_interval([fn(rk[system], rec["relevant"]) for rk, rec in zip(rankings, results)])
            rows.append(Row(system, metric, len(results), m, max(0.0, lo), min(1.0, hi)))  # metrics in [0, 1]
    return rows
