"""``hindsight eval preferences`` and ``hindsight eval retrieval``: the TRLM scorers on AlpacaEval and SciFact."""

from __future__ import annotations

import typer
from rich.table import Table

from hindsight.cli.common import (DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, err, flag_errors, out, print_json,
                                  progress_bar)
from hindsight.cli.scoring import REVERSE_MODEL_OPTION, build_scorer
from hindsight.errors import HindsightError

DATA_OPTION = typer.Option(None, "--data", help="The data folder (default: shared/data) or the dataset file.")
LIMIT_OPTION = typer.Option(None, "--limit", help="Use the first N items only.")


def _table(title: str, rows, json_out: bool, extra: dict) -> None:
    if json_out:
        print_json({**extra, "rows": [r.as_dict() for r in rows]})
        return
    table = Table(title=title)
    for col in ("system", "metric", "n", "value", "95% interval"):
        table.add_column(col, justify="right" if col in ("n", "value") else "left")
    for r in rows:
        table.add_row(r.system, r.metric, str(r.n), f"{r.value:.3f}", f"[{r.low:.3f}, {r.high:.3f}]")
    out.print(table)
    out.print(f"results: {extra['out']}")


def preferences(
    scorers: str = typer.Option("self,forward,trlm-fo", "--scorers", help="Comma-separated scorer names; NAME@VARIANT picks another prompt wording."),
    data: str = DATA_OPTION,
    limit: int = LIMIT_OPTION,
    out_file: str = typer.Option("runs/eval-preferences.jsonl", "--out", help="Results JSONL (resumes)."),
    model: str = MODEL_OPTION,
    reverse_model: str = REVERSE_MODEL_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """How often each scorer prefers the output GPT-4 preferred (AlpacaEval 1 pairs), beside baselines."""
    from hindsight.evaluation.data import dataset_file, read_jsonl
    from hindsight.evaluation.results import ResultFile
    from hindsight.reverse.evals import PREFERENCE_FILE, run_preferences, summarise_preferences

    names = _check_names(scorers, reverse_model)
    path = dataset_file(*PREFERENCE_FILE, data)
    records = list(read_jsonl(path, limit))
    sc = _load_scorers(names, model, reverse_model, device, "answer")
    rf = ResultFile(out_file, "id")
    with progress_bar("preferences", len(records)) as (prog, task):
        run_preferences(records, sc, rf, on_item=lambda: prog.advance(task))
    ids = {str(r["id"]) for r in records}
    results = [r for k, r in rf.records.items() if k in ids]
    rows = summarise_preferences(results, list(sc))
    _table(f"AlpacaEval pairwise preference agreement ({len(results)} pairs, draws excluded)", rows, json_out,
           {"data": str(path), "out": out_file, "model": next(iter(sc.values())).lm.name})


def retrieval(
    scorers: str = typer.Option("forward,trlm-fo", "--scorers", help="Comma-separated rerankers ('' for BM25 alone); NAME@VARIANT picks another prompt wording."),
    data: str = DATA_OPTION,
    limit: int = LIMIT_OPTION,
    top_k: int = typer.Option(20, "--top-k", help="BM25 passages reranked per claim."),
    max_words: int = typer.Option(200, "--max-words", help="Truncate passages to this many words."),
    out_file: str = typer.Option("runs/eval-retrieval.jsonl", "--out", help="Results JSONL (resumes)."),
    model: str = MODEL_OPTION,
    reverse_model: str = REVERSE_MODEL_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """SciFact: BM25 alone vs reranking its top K by each scorer (NDCG@10, MRR@10, Recall@K)."""
    from hindsight.evaluation.data import dataset_file, read_jsonl
    from hindsight.evaluation.results import ResultFile
    from hindsight.reverse.evals import SCIFACT, run_retrieval, summarise_retrieval
    from hindsight.reverse.retrieval import BM25Index, read_corpus

    if top_k < 1:
        raise HindsightError(f"--top-k must be at least 1 (got {top_k}).")
    names = _check_names(scorers, reverse_model, allow_none=True)
    claims_path = dataset_file(SCIFACT, "claims.jsonl", data)
    claims = list(read_jsonl(claims_path, limit))
    sc = _load_scorers(names, model, reverse_model, device, "retrieval")
    with err.status("Indexing the SciFact corpus with BM25..."):
        index = BM25Index(read_corpus(claims_path.parent / "corpus.jsonl"))
    rf = ResultFile(out_file, "id")
    with progress_bar("retrieval", len(claims)) as (prog, task):
        run_retrieval(claims, index, sc, rf, top_k=top_k, max_words=max_words, on_item=lambda: prog.advance(task))
    ids = {str(c["id"]) for c in claims}
    results = [r for k, r in rf.records.items() if k in ids and r.get("top_k") == top_k]
    rows = summarise_retrieval(results, list(sc), recall_at=sorted({5, 10, top_k}))
    _table(f"SciFact retrieval: BM25 top {top_k} reranked ({len(results)} claims)", rows, json_out,
           {"data": str(claims_path.parent), "out": out_file, "top_k": top_k})


def _check_names(spec: str, reverse_model, allow_none: bool = False) -> list[str]:
    """Every scorer name checked before data or models are touched."""
    from hindsight.api.checks import scorer_list

    names = [s.strip() for s in spec.split(",") if s.strip()]
    with flag_errors():
        scorer_list(names, reverse_model, allow_empty=allow_none)
    return names


def _load_scorers(names: list[str], model, reverse_model, device, task: str) -> dict:
    return {name: build_scorer(name, model, reverse_model, device, task, quiet=True) for name in names}


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    eval_app.command("preferences")(preferences)
    eval_app.command("retrieval")(retrieval)
