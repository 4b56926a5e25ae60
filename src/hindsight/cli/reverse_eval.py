"""``hindsight eval preferences`` and ``hindsight eval retrieval``: the TRLM scorers on AlpacaEval and SciFact."""

from __future__ import annotations

import typer
from rich.table import Table

from hindsight.cli.common import DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, flag_errors, out, print_json
from hindsight.cli.scale import GPUS_OPTION, RAY_ADDRESS_OPTION, WORKERS_OPTION, run_items, scale_of
from hindsight.cli.scoring import REVERSE_MODEL_OPTION, build_scorer
from hindsight.cli.tables import print_length_controlled, print_paired
from hindsight.errors import HindsightError
from hindsight.lm import DEFAULT_MODEL

DATA_OPTION = typer.Option(None, "--data", help="The data folder (default: shared/data) or the dataset file.")
LIMIT_OPTION = typer.Option(None, "--limit", help="Use the first N items only.")


def _table(title: str, summary: dict, json_out: bool, extra: dict) -> None:
    """The rows (each system's value and interval), then the paired tables and what else the summary holds."""
    rows = summary["rows"]
    if json_out:
        print_json({**extra, **summary, "rows": [r.as_dict() for r in rows]})
        return
    table = Table(title=title)
    for col in ("system", "metric", "n", "value", "95% interval"):
        table.add_column(col, justify="right" if col in ("n", "value") else "left")
    for r in rows:
        table.add_row(r.system, r.metric, str(r.n), f"{r.value:.3f}", f"[{r.low:.3f}, {r.high:.3f}]")
    out.print(table)
    paired = summary.get("paired") or []
    for t in paired if isinstance(paired, list) else [paired]:
        print_paired(t)
    if summary.get("length_controlled"):
        print_length_controlled(summary["length_controlled"])
    if summary.get("ceiling"):
        c = summary["ceiling"]
        out.print(f"first-stage ceiling (BM25 top {c['top_k']}): recall {c['recall']:.3f}, claims with a relevant "
                  f"passage {c['claims_with_relevant']:.3f}, NDCG@10 of the ideal reordering {c['oracle_ndcg@10']:.3f}")
    for f in summary.get("fits") or []:
        out.print(f"alpha for {f['system']} ({f['method']}) fitted on {f['n_queries']} development claims "
                  f"({f['dev']}): {f['alpha']:g}, NDCG@10 {f['metric_at_alpha']:.3f} there, "
                  f"{f['folds']}-fold cross-validated {f['cv_metric']:.3f}")
    out.print(f"results: {extra['out']}")


def preferences(
    scorers: str = typer.Option("self,forward,trlm-fo", "--scorers", help="Comma-separated scorer names; NAME@VARIANT picks another prompt wording."),
    data: str = DATA_OPTION,
    limit: int = LIMIT_OPTION,
    out_file: str = typer.Option("runs/eval-preferences.jsonl", "--out", help="Results JSONL (resumes)."),
    model: str = MODEL_OPTION,
    reverse_model: str = REVERSE_MODEL_OPTION,
    device: str = DEVICE_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
    gpus_per_worker: float = GPUS_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """How often each scorer prefers the output GPT-4 preferred (AlpacaEval 1 pairs), beside baselines."""
    from hindsight.experiments.trlm import PREFERENCE_FILE, PreferenceEval
    from hindsight.records.data import dataset_file

    scale = scale_of(workers, ray_address, gpus_per_worker)
    exp = PreferenceEval(scorers=_check_names(scorers, reverse_model), data=data, limit=limit, model=model,
                         reverse_model=reverse_model, device=device)
    path = dataset_file(*PREFERENCE_FILE, data)
    summary, n = _run(exp, out_file, scale)
    _table(f"AlpacaEval pairwise preference agreement ({n} pairs, draws excluded)", summary, json_out,
           {"data": str(path), "out": out_file, "model": model or DEFAULT_MODEL})


def retrieval(
    scorers: str = typer.Option("forward,trlm-fo", "--scorers", help="Comma-separated rerankers ('' for BM25 alone); NAME@VARIANT picks another prompt wording."),
    data: str = DATA_OPTION,
    limit: int = LIMIT_OPTION,
    top_k: int = typer.Option(20, "--top-k", help="BM25 passages reranked per claim."),
    max_words: int = typer.Option(200, "--max-words", help="Truncate passages to this many words."),
    out_file: str = typer.Option("runs/eval-retrieval.jsonl", "--out", help="Results JSONL (resumes)."),
    fusion: str = typer.Option(None, "--fusion", help="Also fuse BM25 with each reranker: minmax | z | rrf."),
    alpha: float = typer.Option(None, "--alpha", help="Fusion weight of the reranker, 0..1 (default 0.5)."),
    fit_alpha: str = typer.Option(None, "--fit-alpha", help="Choose alpha on development claims: a claims JSONL file or rows START:STOP of the claims file (left out of the evaluation)."),
    model: str = MODEL_OPTION,
    reverse_model: str = REVERSE_MODEL_OPTION,
    device: str = DEVICE_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
    gpus_per_worker: float = GPUS_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """SciFact: BM25 alone vs reranking its top K by each scorer (NDCG@10, MRR@10, Recall@K)."""
    from hindsight.experiments.trlm import RetrievalEval
    from hindsight.records.results import ResultFile

    if top_k < 1:
        raise HindsightError(f"--top-k must be at least 1 (got {top_k}).")
    _check_fusion(fusion, alpha, fit_alpha)
    scale = scale_of(workers, ray_address, gpus_per_worker)
    exp = RetrievalEval(scorers=_check_names(scorers, reverse_model, allow_none=True), data=data, limit=limit,
                        top_k=top_k, max_words=max_words, model=model, reverse_model=reverse_model, device=device,
                        fusion=fusion, alpha=alpha, fit_alpha=fit_alpha)
    claims_path = exp.claims_path()
    exp.dev_claims()  # a bad --fit-alpha is one sentence before anything loads
    summary, _ = _run(exp, out_file, scale)
    for f in summary["fits"]:  # the chosen alpha is kept with the results it produced
        ResultFile(out_file, exp.key_field).append({"id": f"fusion-fit:{f['system']}:{f['method']}",
                                                    "kind": "fusion-fit", **f})
    dev = f", {summary['dev_claims']} development claims left out" if summary["dev_claims"] else ""
    _table(f"SciFact retrieval: BM25 top {top_k} reranked ({summary['claims']} claims{dev})", summary, json_out,
           {"data": str(claims_path.parent), "out": out_file, "top_k": top_k, "fusion": fusion})


def _check_fusion(fusion: str | None, alpha: float | None, fit_alpha: str | None) -> None:
    from hindsight.reverse.fusion import FUSIONS

    if fusion is not None and fusion not in FUSIONS:
        raise HindsightError(f"Unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}.")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise HindsightError(f"--alpha must lie in [0, 1] (got {alpha}).")
    if (alpha is not None or fit_alpha) and fusion is None:
        raise HindsightError("--alpha and --fit-alpha need --fusion minmax|z|rrf.")
    if alpha is not None and fit_alpha:
        raise HindsightError("Give either --alpha or --fit-alpha, not both.")


def _run(exp, out_file: str, scale, counts=lambda rec: True) -> tuple[list, int]:
    """The experiment on the shared runner under a progress bar: its rows and how many records they cover."""
    from hindsight.experiments.runner import completed
    from hindsight.records.results import ResultFile

    rows = run_items(exp, out_file, scale, loaders=_loaders())
    return rows, sum(counts(rec) for rec in completed(exp, ResultFile(out_file, exp.key_field), exp.items()))


def _check_names(spec: str, reverse_model, allow_none: bool = False) -> list[str]:
    """Every scorer name checked before data or models are touched."""
    from hindsight.api.checks import scorer_list

    names = [s.strip() for s in spec.split(",") if s.strip()]
    with flag_errors():
        scorer_list(names, reverse_model, allow_empty=allow_none)
    return names


def _loaders():
    """Scorers loaded the way ``hindsight score`` loads them (quietly: the progress bar follows), all through
    one runtime per device, so that ``--scorers forward,trlm-fo`` loads the model once."""
    from functools import cache

    from hindsight.cli.common import runtime
    from hindsight.experiments.runner import Loaders

    shared = cache(lambda device: runtime(device, quiet=True))
    return Loaders(scorer=lambda name, model, reverse_model, device, task: build_scorer(
        name, model, reverse_model, device, task, rt=shared(device)))


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    eval_app.command("preferences")(preferences)
    eval_app.command("retrieval")(retrieval)
