"""CNN/DailyMail citation evaluation: does a search find the article sentence a highlight came from?

Gold labels are not in the data, so we define them by lexical overlap: the gold source of a highlight sentence
is the article sentence with the highest ROUGE-style overlap (the mean of unigram and bigram F1 over lowercased
word tokens); ties all count as gold. Highlights are abstractive, so some have no clear source: every record keeps
its overlap, and the summary reports how many items were below ``min_overlap`` (those are skipped).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hindsight.records.data import dataset_file, read_jsonl
from hindsight.experiments.compare import citation_comparison
from hindsight.experiments.runner import Loaders, ModelExperiment
from hindsight.lm import LanguageModel
from hindsight.records.stats import wilson_interval
from hindsight.reverse.citation import attribute, split_sentences
from hindsight.reverse.scorers import PairScorer, make_scorer

_WORD = re.compile(r"\w+")


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _f1(a: Counter, b: Counter) -> float:
    common = sum((a & b).values())
    if not common:
        return 0.0
    p, r = common / sum(b.values()), common / sum(a.values())
    return 2 * p * r / (p + r)


def lexical_overlap(reference: str, candidate: str) -> float:
    """Mean of unigram and bigram F1 between two texts (lowercased word tokens): a small ROUGE-1/2."""
    a, b = _WORD.findall(reference.lower()), _WORD.findall(candidate.lower())
    return (_f1(_ngrams(a, 1), _ngrams(b, 1)) + _f1(_ngrams(a, 2), _ngrams(b, 2))) / 2


def gold_sources(highlight: str, sentences: Sequence[str]) -> tuple[list[int], float]:
    """The indices of the sentences with maximal overlap with ``highlight``, and that overlap."""
    overlaps = [lexical_overlap(highlight, s) for s in sentences]
    best = max(overlaps)
    return [i for i, o in enumerate(overlaps) if o == best], best


def detokenize(text: str) -> str:
    """Undo the PTB-style spacing of the stored highlights (``word .``, ``it 's``) so the LM reads normal text."""
    text = re.sub(r" ([.,!?;:%])", r"\1", text)
    text = re.sub(r" (n't|'s|'re|'ve|'m|'ll|'d)\b", r"\1", text)
    return text.replace("`` ", '"').replace(" ''", '"')


def citation_items(data: str | Path | None, limit: int | None, max_sentences: int = 0,
                   highlights_per_article: int = 0, dropped: list[dict[str, Any]] | None = None
                   ) -> Iterator[dict[str, Any]]:
    """One item per highlight sentence: its key, text, the (possibly truncated) article sentences and gold.

    Articles without sentences give no item; they are noted in ``dropped`` (when given) with the reason.
    """
    path = dataset_file("cnndm_frank", "cnndm_test_frank.jsonl", data)
    for row in read_jsonl(path, limit):
        sentences = [s for s in row["article_sentences"] if s.strip()]
        if max_sentences:
            sentences = sentences[:max_sentences]
        if not sentences:
            if dropped is not None:
                dropped.append({"article": row["id"], "reason": "empty_article"})
            continue
        parts = split_sentences(detokenize(row["highlights"]))
        if highlights_per_article:
            parts = parts[:highlights_per_article]
        for h, text in enumerate(parts):
            gold, overlap = gold_sources(text, sentences)
            yield {"key": f"{row['id']}:{h}", "article": row["id"], "highlight": text, "sentences": sentences,
                   "gold": gold, "overlap": round(overlap, 4)}


def cite_item(item: dict[str, Any], lm: LanguageModel, scorers: dict[str, PairScorer],
              searches: Sequence[str]) -> dict[str, Any]:
    """Every (scorer, search) on one highlight; the record keeps predictions, correctness and cost."""
    results = {}
    for name, scorer in scorers.items():
        for search in searches:
            before, t0 = lm.counters.snapshot(), time.perf_counter()
            att = attribute(scorer, item["highlight"], item["sentences"], search)
            cost = lm.counters.since(before)
            results[f"{name}/{search}"] = {
                "index": att.index, "correct": att.index in item["gold"], "calls": att.calls, "pairs": att.pairs,
                "tokens": cost.tokens, "seconds": round(time.perf_counter() - t0, 3),
            }
    rec = {k: item[k] for k in ("key", "article", "highlight", "gold", "overlap")}
    rec["n_sentences"] = len(item["sentences"])
    rec["results"] = results
    return rec


@dataclass
class CitationEval(ModelExperiment):
    """``hindsight eval citation``: every (scorer, search) on each CNN/DM highlight with enough overlap."""

    data: str | None = None
    limit: int | None = 25
    max_sentences: int = 8
    highlights: int = 1
    min_overlap: float = 0.3
    scorers: list[str] = field(default_factory=lambda: ["trlm-fo", "forward"])
    searches: list[str] = field(default_factory=lambda: ["linear", "binary", "exclusion"])

    name = "citation"
    key_field = "key"
    provenance_ignores = ("min_overlap",)  # which highlights are kept, not what their records hold

    def items(self) -> list[dict[str, Any]]:
        return self.screen()[0]

    def screen(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The highlights kept, and those dropped with the reason (no clear source, or an empty article)."""
        dropped: list[dict[str, Any]] = []
        kept = []
        for it in citation_items(self.data, self.limit, self.max_sentences, self.highlights, dropped):
            if it["overlap"] >= self.min_overlap:
                kept.append(it)
            else:
                dropped.append({"key": it["key"], "reason": "low_overlap", "overlap": it["overlap"]})
        return kept, dropped

    def setup(self, loaders: Loaders) -> dict[str, Any]:
        lm, rev = self.load_models(loaders)
        return {"lm": lm, "scorers": {n: make_scorer(n, lm, task="citation", reverse_lm=rev) for n in self.scorers}}

    def run_item(self, item: dict[str, Any]) -> dict[str, Any]:
        return cite_item(item, self.parts["lm"], self.parts["scorers"], self.searches)

    def summarise(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        combos = [f"{n}/{s}" for n in self.scorers for s in self.searches]
        return summarise_citation(records, self.min_overlap, dropped=self.screen()[1], combos=combos)


def summarise_citation(records: Sequence[dict[str, Any]], min_overlap: float = 0.0, *,
                       dropped: Sequence[dict[str, Any]] = (), combos: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy per (scorer, search) with Wilson intervals, the chance rate, the mean cost per item, the paired
    table against the strongest baseline, and how many highlights were dropped before scoring and why."""
    kept = [r for r in records if r["overlap"] >= min_overlap]
    low = [d for d in dropped if d["reason"] == "low_overlap"] + [
        {"key": r["key"], "reason": "low_overlap", "overlap": r["overlap"]} for r in records
        if r["overlap"] < min_overlap]
    present = {c for r in kept for c in r["results"]}
    combos = sorted(present if combos is None else present.intersection(combos))
    kept = [{**r, "results": {c: v for c, v in r["results"].items() if c in combos}} for r in kept]
    rows = []
    for c in combos:
        rs = [r["results"][c] for r in kept if c in r["results"]]
        k, n = sum(x["correct"] for x in rs), len(rs)
        lo, hi = wilson_interval(k, n)
        scorer, search = c.split("/")
        rows.append({"scorer": scorer, "search": search, "n": n, "correct": k, "accuracy": k / n if n else None,
                     "low": lo, "high": hi, "pairs": sum(x["pairs"] for x in rs) / max(n, 1),
                     "tokens": sum(x["tokens"] for x in rs) / max(n, 1),
                     "seconds": sum(x["seconds"] for x in rs) / max(n, 1)})
    chance = sum(len(r["gold"]) / r["n_sentences"] for r in kept) / max(len(kept), 1)
    empty = sum(d["reason"] == "empty_article" for d in dropped)
    return {"items": len(kept), "skipped_low_overlap": len(low), "min_overlap": min_overlap,
            "skipped": {"low_overlap": len(low), "empty_article": empty,
                        "low_overlap_examples": [{"key": d["key"], "overlap": d["overlap"]} for d in low[:5]]},
            "chance": chance, "mean_sentences": sum(r["n_sentences"] for r in kept) / max(len(kept), 1),
            "rows": rows, "paired": citation_comparison(kept) if kept and combos else None}
