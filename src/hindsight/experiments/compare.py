"""Paired comparisons for every comparative evaluation, computed from the records the evaluations keep.

Each function turns an evaluation's records into per-item scores per system (the same items for all of them)
and hands them to :func:`hindsight.records.paired.compare_systems`, which compares every system with the
strongest of the named baselines (paired bootstrap interval, wins/losses/ties, sign and Wilcoxon tests, Holm).
Retrieval also gets the fused rankings (BM25 + reranker) and the first stage's recall ceiling; preferences
get the length-controlled agreement next to the raw one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hindsight.errors import HindsightError
from hindsight.records.lengthctl import length_controlled_agreement
from hindsight.records.paired import compare_systems
from hindsight.records.ranking import mrr_at_k, ndcg_at_k, recall_at_k
from hindsight.reverse.fusion import AlphaFit, Query, fit_alpha, fused_order

RankMetric = Callable[[Sequence[str], Sequence[str]], float]
RETRIEVAL_METRICS: dict[str, RankMetric] = {"NDCG@10": lambda r, rel: ndcg_at_k(r, rel, 10),
                                            "MRR@10": lambda r, rel: mrr_at_k(r, rel, 10)}


# ---- retrieval -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fusion:
    """One fused ranking: the reranker (scorer name and sum/mean variant), the method and the weight."""

    name: str
    variant: str
    method: str
    alpha: float

    @property
    def label(self) -> str:
        return f"{self.name} ({self.variant}) + BM25 [{self.method}, alpha {self.alpha:g}]"


def reranker_scores(rec: dict[str, Any], name: str, variant: str) -> list[float]:
    """The reranker's score of every BM25 candidate (sum of log-likelihood, or its per-token mean)."""
    return [t if variant == "sum" else t / max(k, 1) for t, k in rec["scores"][name]]


def _by_order(rec: dict[str, Any], order: Sequence[int]) -> list[str]:
    return [rec["bm25"][i] for i in order]


def first_stage_scores(rec: dict[str, Any]) -> list[float]:
    if "bm25_scores" not in rec:
        raise HindsightError(f"The record of claim {rec.get('id')} has no BM25 scores (written by an older "
                             "version); rerun the same command to add them before fusing.")
    return rec["bm25_scores"]


def retrieval_rankings(rec: dict[str, Any], names: Sequence[str], variants: Sequence[str],
                       fusions: Sequence[Fusion] = ()) -> dict[str, list[str]]:
    """Every system's ranking of one claim's candidates: BM25, each reranker variant, each fusion."""
    out = {"BM25": list(rec["bm25"])}
    for name in names:
        for variant in variants:
            vals = reranker_scores(rec, name, variant)
            out[f"{name} ({variant})"] = _by_order(rec, sorted(range(len(vals)), key=lambda i: -vals[i]))
    for f in fusions:
        order = fused_order(first_stage_scores(rec), reranker_scores(rec, f.name, f.variant), f.method, f.alpha)
        out[f.label] = _by_order(rec, order)
    return out


def retrieval_paired(rankings: Sequence[dict[str, list[str]]], relevant: Sequence[Sequence[str]], *,
                     baselines: Sequence[str], seed: int = 0) -> list[dict[str, Any]]:
    """One paired table per metric (NDCG@10, MRR@10): every system against the strongest baseline."""
    tables = []
    for metric, fn in RETRIEVAL_METRICS.items():
        scores = {s: [fn(rk[s], rel) for rk, rel in zip(rankings, relevant)] for s in rankings[0]}
        tables.append(compare_systems(scores, baselines=[b for b in baselines if b in scores], metric=metric,
                                      seed=seed))
    return tables


def recall_ceiling(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """What no reranker of the first stage's top K can exceed: its recall, the share of claims with any relevant
    passage in it, and the NDCG@10 of the ideal reordering."""
    n = max(len(records), 1)
    recall = sum(recall_at_k(r["bm25"], r["relevant"], len(r["bm25"])) for r in records) / n
    anyrel = sum(any(d in set(r["relevant"]) for d in r["bm25"]) for r in records) / n
    ideal = [sorted(r["bm25"], key=lambda d: d not in set(r["relevant"])) for r in records]
    oracle = sum(ndcg_at_k(rk, r["relevant"], 10) for rk, r in zip(ideal, records)) / n
    return {"top_k": records[0]["top_k"] if records else 0, "recall": recall, "claims_with_relevant": anyrel,
            "oracle_ndcg@10": oracle}


def fit_fusion(records: Sequence[dict[str, Any]], name: str, variant: str, method: str, *, folds: int = 5,
               seed: int = 0) -> AlphaFit:
    """Choose alpha for one reranker on development records (NDCG@10), cross-validated."""
    queries = [Query(r["bm25"], first_stage_scores(r), reranker_scores(r, name, variant), r["relevant"])
               for r in records]
    return fit_alpha(queries, RETRIEVAL_METRICS["NDCG@10"], method=method, folds=folds, seed=seed)


# ---- preferences -----------------------------------------------------------------------------------------------
def preference_picks(decided: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, list[int]]:
    """Which output (1 or 2) each system picks on each decided pair: the baselines, then every scorer by sum and
    by per-token mean (scorers missing on some pair are left out)."""
    ones = sum(int(r["preference"]) == 1 for r in decided)
    majority = 1 if ones >= len(decided) - ones else 2
    picks = {f"majority class (always output {majority})": [majority] * len(decided),
             "longer output": [1 if r["len_1"] >= r["len_2"] else 2 for r in decided]}
    for name in names:
        if not all(name in r["scores"] for r in decided):
            continue
        for variant in ("sum", "mean"):
            col = []
            for r in decided:
                (t1, k1), (t2, k2) = r["scores"][name]
                v1, v2 = (t1, t2) if variant == "sum" else (t1 / max(k1, 1), t2 / max(k2, 1))
                col.append(1 if v1 >= v2 else 2)
            picks[f"{name} ({variant})"] = col
    return picks


def preference_baselines(picks: dict[str, list[int]]) -> list[str]:
    return [s for s in picks if s.startswith(("majority class", "longer output"))]


def preference_comparison(decided: Sequence[dict[str, Any]], picks: dict[str, list[int]], *, seed: int = 0,
                          n_resamples_lc: int = 1000) -> dict[str, Any]:
    """Paired agreement table against the strongest baseline, and each system's length-controlled agreement
    (lengths in characters; the majority class is left out, its pick does not depend on the outputs)."""
    gold = [int(r["preference"]) for r in decided]
    correct = {s: [float(p == g) for p, g in zip(col, gold)] for s, col in picks.items()}
    paired = compare_systems(correct, baselines=preference_baselines(picks), metric="agreement", seed=seed)
    pref = [r["len_1"] if g == 1 else r["len_2"] for r, g in zip(decided, gold)]
    other = [r["len_2"] if g == 1 else r["len_1"] for r, g in zip(decided, gold)]
    lc = [{"system": s, **length_controlled_agreement(correct[s], pref, other, n_resamples=n_resamples_lc,
                                                      seed=seed).as_dict()}
          for s in picks if not s.startswith("majority class")]
    return {"paired": paired, "length_controlled": lc}


# ---- citation, jailbreak, RAIN -------------------------------------------------------------------------------
def citation_comparison(records: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Per-highlight correctness of every (scorer, search) against the strongest baseline: the forward and self
    scorers, and chance (the expected correctness of a uniform pick, |gold| / sentences)."""
    combos = sorted({c for r in records for c in r["results"]})
    both = [r for r in records if all(c in r["results"] for c in combos)]
    scores = {c: [float(r["results"][c]["correct"]) for r in both] for c in combos}
    scores["chance"] = [len(r["gold"]) / r["n_sentences"] for r in both]
    baselines = ["chance"] + [c for c in combos if c.split("/")[0] in ("forward", "self")]
    return compare_systems(scores, baselines=baselines, metric="accuracy", seed=seed)


def jailbreak_comparison(records: Sequence[dict[str, Any]], decide: Callable[[dict[str, Any], str], tuple[bool, bool]],
                         *, seed: int = 0) -> list[dict[str, Any]]:
    """Per filter: filter + reverse queries against the filter alone, on attacks (blocked = right), on benign
    requests (passed = right) and on both; ``decide(record, filter)`` gives (blocked alone, blocked with reverse)."""
    names = sorted({name for r in records for name in r["filters"]})
    tables = []
    for name in names:
        for split in ("attack", "benign", "all"):
            recs = [r for r in records if name in r["filters"] and split in ("all", r["split"])]
            if not recs:
                continue
            right = {mode: [float(decide(r, name)[k] == (r["split"] == "attack")) for r in recs]
                     for k, mode in enumerate((f"{name} alone", f"{name} + reverse"))}
            table = compare_systems(right, baselines=[f"{name} alone"], metric=f"correct decisions ({split})",
                                    seed=seed)
            tables.append({"filter": name, "split": split, **table})
    return tables


def rain_comparison(records: Sequence[dict[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    """RAIN against vanilla sampling on the same prompts: every judge's P(harmless) and the self-evaluation."""
    tables = []
    judges = sorted({j for r in records for j in r.get("judges", {})})
    for j in judges:
        recs = [r for r in records if j in r["judges"]]
        scores = {"vanilla": [r["judges"][j][0] for r in recs], "rain": [r["judges"][j][1] for r in recs]}
        tables.append({"judge": j, **compare_systems(scores, baselines=["vanilla"], metric=f"{j} score", seed=seed)})
    with_self = [r for r in records if "self_eval" in r]
    if with_self:
        scores = {"vanilla": [r["self_eval"][0] for r in with_self], "rain": [r["self_eval"][1] for r in with_self]}
        tables.append({"judge": "self-eval",
                       **compare_systems(scores, baselines=["vanilla"], metric="self-evaluation", seed=seed)})
    return tables


def truthful_comparison(records: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """RAIN against vanilla on TruthfulQA generations: truthful (1) or not (0) by the reference judge."""
    gen = [r for r in records if "rain_verdict" in r]
    scores = {m: [float(r[f"{m}_verdict"]["truthful"]) for r in gen] for m in ("vanilla", "rain")}
    return compare_systems(scores, baselines=["vanilla"], metric="truthful", seed=seed)
