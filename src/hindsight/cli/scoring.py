"""``hindsight score``, ``hindsight rerank`` and ``hindsight retrieve``: the TRLM scorers and two applications."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from hindsight.cli.common import DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, SEED_OPTION, err, get_model, out, print_json
from hindsight.errors import HindsightError
from hindsight.reverse.scorers import SCORERS, PairScorer

SCORER_HELP = f"One of {', '.join(SCORERS)} (trlm-fo@VARIANT for another prompt wording)."
REVERSE_MODEL_OPTION = typer.Option(None, "--reverse-model", help="A reverse-trained model (the --out of "
                                    "'hindsight reverse train') for trlm-ba / trlm-foba.")
MEAN_OPTION = typer.Option(False, "--mean", help="Rank by per-token mean log-likelihood instead of the sum.")


def build_scorer(name: str, model: str | None, reverse_model: str | None, device: str | None, task: str,
                 quiet: bool = False) -> PairScorer:
    """Check the names first (one-line errors before any loading), then load what the scorer needs."""
    from hindsight.reverse.scorers import make_scorer
    from hindsight.reverse.training import load_reverse_model, resolve_reverse_dir

    if name.partition("@")[0] not in SCORERS:
        raise HindsightError(f"Unknown scorer {name!r}; choose one of {', '.join(SCORERS)}.")
    rev = None
    if name.partition("@")[0] in ("trlm-ba", "trlm-foba"):
        if reverse_model is None:
            raise HindsightError(f"Scorer {name} needs a reverse-trained model: pass --reverse-model PATH.")
        resolve_reverse_dir(reverse_model)
        rev = load_reverse_model(reverse_model, device=device)
    lm = rev if rev is not None else get_model(model, device, quiet=quiet)
    return make_scorer(name, lm, task=task, reverse_lm=rev)


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
    sc = build_scorer(scorer, model, reverse_model, device, task)
    s = sc.score([query], [response])
    rec = {"scorer": scorer, "task": task, "model": sc.lm.name, "total": float(s.total[0]),
           "tokens": int(s.tokens[0]), "mean": float(s.mean[0])}
    if json_out:
        print_json(rec)
        return
    table = Table(title=f"{scorer} ({sc.lm.name}, {task} prompts)")
    for col in ("log-likelihood (sum)", "tokens", "per-token mean"):
        table.add_column(col, justify="right")
    table.add_row(f"{rec['total']:.3f}", str(rec["tokens"]), f"{rec['mean']:.4f}")
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
) -> None:
    """Best-of-N: sample N responses and keep the one the scorer likes best."""
    from hindsight.lm import check_sampling_args
    from hindsight.reverse.rerank import best_of_n

    check_sampling_args(n=n, max_tokens=max_tokens, temperature=temperature)
    sc = build_scorer(scorer, model, reverse_model, device, "answer")
    lm = get_model(model, device)
    t0 = time.perf_counter()
    res = best_of_n(lm, prompt, sc, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed,
                    normalise=mean)
    if json_out:
        print_json({"prompt": prompt, "scorer": scorer, "mean": mean, "seed": seed,
                    "seconds": round(time.perf_counter() - t0, 3), **res.as_dict()})
        return
    table = Table(title=f"best of {n} by {scorer}{' (mean)' if mean else ''}")
    for col in ("#", "score", "text"):
        table.add_column(col)
    for i, c in sorted(enumerate(res.candidates), key=lambda ic: -ic[1]["score"]):
        table.add_row(("* " if i == res.index else "") + str(i), f"{c['score']:.2f}", c["text"])
    out.print(table)


def retrieve(
    query: str = typer.Argument(..., help="The search query."),
    corpus: str = typer.Option(..., "--corpus", help="Passages: JSONL (id + text or title/abstract) or one per line."),
    top_k: int = typer.Option(20, "--top-k", help="Passages kept from BM25 and reranked."),
    scorer: str = typer.Option(None, "--scorer", "-s", help=f"Rerank with: {', '.join(SCORERS)} (default: BM25 only)."),
    mean: bool = MEAN_OPTION,
    max_words: int = typer.Option(200, "--max-words", help="Truncate passages to this many words when scoring."),
    fusion: str = typer.Option(None, "--fusion", help="Fuse BM25 with the reranker: minmax | z | rrf."),
    alpha: float = typer.Option(0.5, "--alpha", help="Fusion weight of the reranker (0 = BM25 alone, 1 = reranker alone)."),
    model: str = MODEL_OPTION,
    reverse_model: str = REVERSE_MODEL_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """BM25 retrieval over a corpus file, reranked by a scorer (optionally fused with BM25's score)."""
    from hindsight.reverse.retrieval import BM25Index, read_corpus
    from hindsight.reverse.retrieval import retrieve as run_retrieve

    if fusion is not None:
        from hindsight.reverse.fusion import fuse

        fuse([0.0], [0.0], fusion, alpha)  # the method and weight checked before any loading
        if not scorer:
            raise HindsightError("--fusion needs a reranker: pass --scorer too.")
    if not Path(corpus).expanduser().is_file():
        raise HindsightError(f"The corpus file {corpus} does not exist.")
    sc = build_scorer(scorer, model, reverse_model, device, "retrieval") if scorer else None
    with err.status("Indexing the corpus with BM25..."):
        index = BM25Index(read_corpus(corpus))
    hits = run_retrieve(query, index, top_k=top_k, scorer=sc, normalise=mean, max_words=max_words,
                        fusion=fusion, alpha=alpha)
    if json_out:
        print_json({"query": query, "scorer": scorer or "bm25", "fusion": fusion,
                    "alpha": alpha if fusion else None, "hits": hits})
        return
    how = f"{scorer} + BM25, {fusion} fusion, alpha {alpha:g}" if fusion else scorer or "BM25"
    table = Table(title=f"top {len(hits)} for {query!r} ({how})")
    for col in ("rank", "id", "bm25", "score", "passage"):
        table.add_column(col)
    for h in hits:
        text = h["text"] if len(h["text"]) <= 100 else h["text"][:97] + "..."
        table.add_row(str(h["rank"]), h["id"], f"{h['bm25']:.2f}", f"{h['score']:.2f}", text)
    out.print(table)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("score")(score)
    app.command("rerank")(rerank)
    app.command("retrieve")(retrieve)
