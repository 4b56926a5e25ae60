"""``hindsight cite``, ``hindsight defend`` and ``hindsight eval citation|jailbreak``: two TRLM applications."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hindsight.api import CiteRequest, DefendRequest
from hindsight.cli.common import (DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, SEED_OPTION, execute, get_model, num, out,
                                  print_json)
from hindsight.cli.scale import GPUS_OPTION, RAY_ADDRESS_OPTION, WORKERS_OPTION, run_items, scale_of
from hindsight.cli.tables import print_paired
from hindsight.errors import HindsightError
from hindsight.experiments.citation import CitationEval
from hindsight.experiments.jailbreak import JailbreakEval
from hindsight.experiments.runner import Loaders
from hindsight.reverse.citation import SEARCHES
from hindsight.reverse.defence import FILTERS
from hindsight.reverse.models import ReverseModel, load_reverse_model
from hindsight.reverse.scorers import SCORERS

REVERSE_MODEL_OPTION = typer.Option(
    None, "--reverse-model", help="A model trained on reversed token order (TRLM-Ba); local checkpoint directory."
)
DATA_OPTION = typer.Option(None, "--data", help="The data folder (default: shared/data or $HINDSIGHT_DATA).")


def _reverse_lm(path: str | None, device: str | None) -> ReverseModel | None:
    return load_reverse_model(path, device) if path else None


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in allowed]
    if bad or not names:
        raise HindsightError(f"Unknown {what} {', '.join(bad) or '(none)'}; choose from {', '.join(allowed)}.")
    return names


def _read(path: str, what: str) -> str:
    from hindsight.records.data import read_text

    if not Path(path).expanduser().is_file():
        raise HindsightError(f"The {what} file {path} does not exist.")
    return read_text(path, what)


# ---- cite ------------------------------------------------------------------------------------------------------
def cite(
    summary: str = typer.Argument(..., help="The summary (one or more sentences) to attribute."),
    article: str = typer.Option(..., "--article", help="A text file holding the article."),
    search: str = typer.Option("linear", "--search", help="linear | binary | exclusion."),
    scorer: str = typer.Option("trlm-fo", "--scorer", help="trlm-fo | trlm-ba | trlm-foba | forward | self."),
    reverse_model: str = REVERSE_MODEL_OPTION,
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Find the article sentence each summary sentence came from, by reverse scoring."""
    res = execute(CiteRequest(summary=summary, article=_read(article, "article"), search=search, scorer=scorer,
                              model=model, reverse_model=reverse_model), device)
    if json_out:
        print_json(res)
        return
    table = Table(title=f"{scorer} {search} search over {res['article_sentences']} article sentences")
    table.add_column("summary sentence")
    table.add_column("#", justify="right")
    table.add_column("source sentence")
    table.add_column("pairs", justify="right")
    for c in res["citations"]:
        table.add_row(c["summary_sentence"], str(c["source_index"]), c["source_sentence"], str(c["pairs"]))
    out.print(table)


# ---- defend ----------------------------------------------------------------------------------------------------
def defend(
    prompt: str = typer.Argument(..., help="The user prompt to check."),
    filter_name: str = typer.Option("keyword", "--filter", help="keyword | lm-judge."),
    queries: int = typer.Option(4, "--queries", help="Reverse queries generated from the response."),
    threshold: float = typer.Option(0.25, "--threshold", help="Block when more than this fraction of queries is flagged."),
    filter_threshold: float = typer.Option(None, "--filter-threshold", help="Harm score above which a text is flagged (default 0.5)."),
    response: str = typer.Option(None, "--response", help="Check this response instead of generating one."),
    max_tokens: int = typer.Option(64, "--max-tokens", help="Tokens of the generated response at most."),
    reverse_model: str = REVERSE_MODEL_OPTION,
    model: str = MODEL_OPTION,
    seed: int = SEED_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Input filter, then the same filter on queries reverse-generated from the response; block or pass."""
    v = execute(DefendRequest(prompt=prompt, filter=filter_name, queries=queries, threshold=threshold,
                              filter_threshold=filter_threshold, response=response, max_tokens=max_tokens,
                              seed=seed, model=model, reverse_model=reverse_model), device)
    if json_out:
        print_json(v)
        return
    out.print(f"[bold]{'BLOCKED' if v['blocked'] else 'ALLOWED'}[/bold] (stage: {v['stage']}; {filter_name} score of "
              f"the prompt {num(v['input_score'])}, threshold {v['filter_threshold']})")
    if v["response"] is not None:
        out.print("response:", style="bold")
        out.print(v["response"], markup=False, highlight=False, soft_wrap=True)
        table = Table(title=f"{len(v['queries'])} reverse queries ({v['generator']}); flagged "
                            f"{num(v['flagged_fraction'], '.2f')}, block above {threshold}")
        table.add_column("query")
        table.add_column("score", justify="right")
        table.add_column("flagged")
        for q, s, f in zip(v["queries"], v["query_scores"], v["query_flags"]):
            table.add_row(q, num(s), "yes" if f else "")
        out.print(table)


# ---- eval citation ---------------------------------------------------------------------------------------------
def _run(exp, out_file: str, info, scale) -> dict:
    """The experiment on the shared runner, resuming from ``out_file``, under a progress bar."""
    return run_items(exp, out_file, scale, loaders=Loaders(model=get_model), info=info)


def _rate(k: int, n: int, lo: float, hi: float) -> str:
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]" if n else "-"


def eval_citation(
    data: str = DATA_OPTION,
    limit: int = typer.Option(25, "--limit", help="Articles to read."),
    out_file: str = typer.Option("runs/citation.jsonl", "--out", help="JSONL results (resumed when present)."),
    scorers: str = typer.Option("trlm-fo,forward", "--scorers", help="Comma-separated scorers."),
    searches: str = typer.Option("linear,binary,exclusion", "--searches", help="Comma-separated searches."),
    max_sentences: int = typer.Option(8, "--max-sentences", help="Use the first M article sentences (0 = all)."),
    highlights: int = typer.Option(1, "--highlights", help="Highlight sentences per article (0 = all)."),
    min_overlap: float = typer.Option(0.3, "--min-overlap", help="Skip highlights whose best lexical overlap is lower."),
    reverse_model: str = REVERSE_MODEL_OPTION,
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
    gpus_per_worker: float = GPUS_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """CNN/DM: accuracy of finding each highlight's source sentence (gold = max lexical overlap)."""
    scale = scale_of(workers, ray_address, gpus_per_worker)
    exp = CitationEval(data=data, limit=limit, max_sentences=max_sentences, highlights=highlights,
                       min_overlap=min_overlap, scorers=_names(scorers, SCORERS, "scorer"),
                       searches=_names(searches, SEARCHES, "search"), model=model, reverse_model=reverse_model,
                       device=device)

    def info(rec) -> str:
        return " ".join(f"{c}:{'✓' if r['correct'] else '✗'}" for c, r in rec["results"].items())

    summary = _run(exp, out_file, info, scale)
    summary.update(out=out_file, limit=limit, max_sentences=max_sentences, highlights=highlights)
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"CNN/DM citation: {summary['items']} highlight sentences, "
                        f"{summary['mean_sentences']:.1f} article sentences on average; chance {summary['chance']:.3f}")
    for col in ("scorer", "search", "n", "accuracy [95% CI]", "pairs/item", "tokens/item", "s/item"):
        table.add_column(col, justify="left" if col in ("scorer", "search") else "right")
    for r in summary["rows"]:
        table.add_row(r["scorer"], r["search"], str(r["n"]), _rate(r["correct"], r["n"], r["low"], r["high"]),
                      f"{r['pairs']:.1f}", f"{r['tokens']:.0f}", f"{r['seconds']:.2f}")
    out.print(table)
    if summary["paired"]:
        print_paired(summary["paired"])
    sk = summary["skipped"]
    out.print(f"Gold = the article sentence with the highest unigram/bigram F1 against the highlight. Dropped "
              f"before scoring: {sk['low_overlap']} highlight(s) with overlap < {min_overlap} (no clear source), "
              f"{sk['empty_article']} article(s) without sentences. Results: {out_file}")


# ---- eval jailbreak --------------------------------------------------------------------------------------------
def eval_jailbreak(
    data: str = DATA_OPTION,
    limit: int = typer.Option(50, "--limit", help="Attack items and benign items (each)."),
    out_file: str = typer.Option("runs/jailbreak.jsonl", "--out", help="JSONL results (resumed when present)."),
    filters: str = typer.Option("keyword,lm-judge", "--filters", help="Comma-separated filters."),
    queries: int = typer.Option(4, "--queries", help="Reverse queries per response."),
    threshold: float = typer.Option(0.25, "--threshold", help="Block when more than this fraction of queries is flagged."),
    attack: str = typer.Option("PAIR", "--attack", help="Attack method of the artifacts (PAIR, GCG, JBC, DSN, "
                               "prompt_with_random_search) or any."),
    max_response_tokens: int = typer.Option(48, "--max-response-tokens", help="Response length (stored ones are cut)."),
    reverse_model: str = REVERSE_MODEL_OPTION,
    model: str = MODEL_OPTION,
    seed: int = typer.Option(0, "--seed", help="Seed of the reverse-query sampling."),
    device: str = DEVICE_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
    gpus_per_worker: float = GPUS_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """JailbreakBench: false negatives on successful attacks, false positives on benign requests."""
    scale = scale_of(workers, ray_address, gpus_per_worker)
    filter_names = _names(filters, FILTERS, "filter")
    if not 0 <= threshold < 1:
        raise HindsightError(f"--threshold must be in [0, 1) (got {threshold}).")
    exp = JailbreakEval(data=data, limit=limit, attack=attack, filters=filter_names, queries=queries,
                        threshold=threshold, max_response_tokens=max_response_tokens, seed=seed, model=model,
                        reverse_model=reverse_model, device=device)
    if not any(it["split"] == "attack" for it in exp.items()) and limit != 0:
        raise HindsightError(f"No successful {attack} attacks in the artifacts; try --attack any.")
    summary = _run(exp, out_file, lambda rec: rec["key"], scale)
    summary.update(out=out_file, queries=queries, attack=attack)
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"JailbreakBench: {summary['attack_items']} successful {attack} attacks, {summary['benign_items']} "
                        f"benign requests; {queries} reverse queries, block above {threshold}")
    for col in ("filter", "mode", "FNR on attacks [95% CI]", "n", "FPR on benign [95% CI]", "n"):
        table.add_column(col, justify="left" if col in ("filter", "mode") else "right")
    for r in summary["rows"]:
        fn, fp = r["fnr"], r["fpr"]
        table.add_row(r["filter"], r["mode"], _rate(fn["count"], fn["n"], fn["low"], fn["high"]), str(fn["n"]),
                      _rate(fp["count"], fp["n"], fp["low"], fp["high"]), str(fp["n"]))
    out.print(table)
    for t in summary["paired"]:
        print_paired(t, f"paired correct decisions on {t['split']} items, {t['filter']}: with reverse queries "
                        "minus the filter alone")
    out.print(f"Results: {out_file}")


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("cite")(cite)
    app.command("defend")(defend)
    eval_app.command("citation")(eval_citation)
    eval_app.command("jailbreak")(eval_jailbreak)
