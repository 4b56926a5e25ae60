"""``hindsight score``, ``hindsight rerank`` and ``hindsight retrieve``: the TRLM scorers and two applications."""

from __future__ import annotations

import typer
from rich.table import Table

from hindsight.api import InvalidRequest, RerankRequest, RetrieveRequest, Runtime, ScoreRequest
from hindsight.cli.common import (DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, SEED_OPTION, execute,
                                  err, execute_with_progress, flag, num, out,
                                  print_json, runtime)
from hindsight.errors import HindsightError
from hindsight.reverse.scorers import SCORERS, PairScorer

SCORER_HELP = f"One of {', '.join(SCORERS)} (trlm-fo@VARIANT for another prompt wording)."
REVERSE_MODEL_OPTION = typer.Option(None, "--reverse-model", help="A reverse-trained model (the --out of "
                                    "'hindsight reverse train') for trlm-ba / trlm-foba.")
MEAN_OPTION = typer.Option(False, "--mean", help="Rank by per-token mean log-likelihood instead of the sum.")


def build_scorer(name: str, model: str | None, reverse_model: str | None, device: str | None, task: str,
                 quiet: bool = False, rt: Runtime | None = None) -> PairScorer:
    """Check the names first (one-line errors before any loading), then load what the scorer needs (through
    ``rt`` when given, so that several scorers on one model share one copy of it)."""
    try:
        return (rt or runtime(device, quiet=quiet)).scorer(name, task, model, reverse_model)
    except InvalidRequest as e:
        raise e.renamed(flag(e.param)) from None


def score(
    query: str = typer.Argument(..., help="The query (instruction, question, claim)."),
    response: str = typer.Argument(..., help="The response (answer, passage)."),
    scorer: str = typer.Option("trlm-fo", "--scorer", "-s", help=SCORER_HELP),
    task: str = typer.Option("answer", "--task", help="Prompt set: answer, retrieval or citation."),
    model: str = MODEL_OPTION,
    reverse_model: str = REVERSE_MODEL_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Score one (query, response) pair: total and per-token mean log-likelihood of the scored side."""
    rec = execute(ScoreRequest(query=query, response=response, scorer=scorer, task=task, model=model,
                               reverse_model=reverse_model), device)
    if json_out:
        print_json(rec)
        return
    table = Table(title=f"{scorer} ({rec['model']}, {task} prompts)")
    for col in ("log-likelihood (sum)", "tokens", "per-token mean"):
        table.add_column(col, justify="right")
    table.add_row(num(rec["total"]), str(rec["tokens"]), num(rec["mean"], ".4f"))
    out.print(table)


def rerank(
    prompt: str = typer.Argument(..., help="The user message to answer."),
    n: int = typer.Option(16, "--n", "-n", help="Candidates to sample (they share one prefill)."),
    scorer: str = typer.Option("trlm-fo", "--scorer", "-s", help=SCORER_HELP),
    temperature: float = typer.Option(0.8, "--temperature", "-t"),
    max_tokens: int = typer.Option(128, "--max-tokens"),
    mean: bool = MEAN_OPTION,
    model: str = MODEL_OPTION,
    reverse_model: str = REVERSE_MODEL_OPTION,
    seed: int = SEED_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
    show: int = typer.Option(0, "--show", help="Print only the best K candidates (0: all)."),
) -> None:
    """Best-of-N: sample N responses and keep the one the scorer likes best."""
    if show < 0:
        raise HindsightError(f"--show must be 0 (all) or positive (got {show}).")
    res = execute_with_progress(RerankRequest(prompt=prompt, n=n, scorer=scorer, temperature=temperature,
                                              max_tokens=max_tokens, mean=mean, seed=seed, model=model,
                                              reverse_model=reverse_model), device, "rerank", json_out)
    if json_out:
        print_json(res)
        return
    ranked = sorted(enumerate(res["candidates"]),
                    key=lambda ic: -ic[1]["score"] if ic[1]["score"] is not None else float("inf"))
    shown = ranked[:show] if show else ranked
    table = Table(title=f"best of {n} by {scorer}{' (mean)' if mean else ''}"
                        + (f", top {len(shown)} shown" if len(shown) < len(ranked) else ""))
    for col in ("#", "score", "text"):
        table.add_column(col)
    for i, c in shown:
        table.add_row(("* " if i == res["index"] else "") + str(i), num(c["score"], ".2f"), c["text"])
    out.print(table)


def retrieve(
    query: str = typer.Argument(..., help="The search query."),
    corpus: str = typer.Option(..., "--corpus", help="Passages: JSONL (id + text or title/abstract) or one per line."),
    top_k: int = typer.Option(20, "--top-k", help="Passages kept from BM25 and reranked."),
    scorer: str = typer.Option(None, "--scorer", "-s", help=f"Rerank with: {', '.join(SCORERS)} (default: BM25 only)."),
    mean: bool = MEAN_OPTION,
    max_words: int = typer.Option(200, "--max-words", help="Truncate passages to this many words when scoring."),
    fusion: str = typer.Option(None, "--fusion", help="Fuse BM25 with the reranker: minmax | z | rrf."),
    alpha: float = typer.Option(None, "--alpha", help="Fusion weight of the reranker, 0..1 (0 = BM25 alone, 1 = reranker alone; default 0.5)."),
    fit_alpha: str = typer.Option(None, "--fit-alpha", help="Choose alpha on development queries: JSONL with 'query' (or 'claim') and 'relevant' passage ids of the same corpus."),
    model: str = MODEL_OPTION,
    reverse_model: str = REVERSE_MODEL_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """BM25 retrieval over a corpus file, reranked by a scorer (optionally fused with BM25's score)."""
    if alpha is not None and fit_alpha is not None:
        raise HindsightError("Give either --alpha or --fit-alpha, not both.")
    res = execute(RetrieveRequest(query=query, corpus=corpus, top_k=top_k, scorer=scorer, mean=mean,
                                  max_words=max_words, model=model, reverse_model=reverse_model, fusion=fusion,
                                  alpha=0.5 if alpha is None else alpha, fit_alpha=fit_alpha), device)
    if json_out:
        print_json(res)
        return
    hits = res["hits"]
    fit = res.get("fit")
    if fit:
        err.print(f"alpha {fit['alpha']:g} chosen on {fit['n_queries']} development queries (NDCG@10 "
                  f"{fit['metric_at_alpha']:.3f}; {fit['folds']}-fold cross-validated {fit['cv_metric']:.3f})")
    how = f"{scorer} + BM25, {fusion} fusion, alpha {res['alpha']:g}" if fusion else scorer or "BM25"
    table = Table(title=f"top {len(hits)} for {query!r} ({how})")
    for col in ("rank", "id", "bm25", "score", "passage"):
        table.add_column(col)
    for h in hits:
        text = h["text"] if len(h["text"]) <= 100 else h["text"][:97] + "..."
        table.add_row(str(h["rank"]), h["id"], num(h["bm25"], ".2f"), num(h["score"], ".2f"), text)
    out.print(table)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("score")(score)
    app.command("rerank")(rerank)
    app.command("retrieve")(retrieve)
