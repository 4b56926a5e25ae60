"""``hindsight rain`` (one prompt) and ``hindsight eval rain-hh | rain-truthfulqa | rain-probe``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from hindsight.api import RainRequest
from hindsight.cli.common import (DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, SEED_OPTION, err, execute, flag_errors,
                                  get_model, num, out, print_json, progress_bar, runtime)
from hindsight.cli.tables import print_paired
from hindsight.cli.scale import GPUS_OPTION, RAY_ADDRESS_OPTION, WORKERS_OPTION, run_items, scale_of
from hindsight.infra import atomic_write

DATA_OPTION = typer.Option(None, "--data", help="Data folder (default: $HINDSIGHT_DATA or shared/data).")
LIMIT_OPTION = typer.Option(20, "--limit", help="Number of items (RAIN is slow on CPU: keep this small).")
EVALUATOR_OPTION = typer.Option(
    "self", "--evaluator",
    help="The search's value: 'self' (the model's self-evaluation) or a potential spec, e.g. 'harmless' "
         "(an HH-trained classifier) or 'toxicity:low'.")
MAX_ITERS_OPTION = typer.Option(50, "--max-iters", help="Visits of the current node before committing (maxT).")
MIN_VISITS_OPTION = typer.Option(None, "--min-visits", help="Early stop needs more visits than this "
                                                            "(default 6 harmless, 16 truthful).")
VALUE_RULE_OPTION = typer.Option(
    "vote", "--value-rule",
    help="Self-evaluation value: 'vote' (the reference: one hard vote per option order, so -1, 0 or +1) or "
         "'soft' (2 * mean p(good) - 1; near 0 for a small model).")
VALUE_THRESHOLD_OPTION = typer.Option(0.8, "--value-threshold", help="... and a value above this (Vt).")
EVAL_TOKENS_OPTION = typer.Option(32, "--max-tokens", help="Response tokens at most (vanilla and RAIN alike).")
BATCH_OPTION = typer.Option(1, "--batch", help="Prompts searched together (one forward for all their searches; "
                                               "a finished search's place goes to the next item at once); each "
                                               "item's answer is the one it gets alone. With --workers: items per "
                                               "call to a worker.")


def rain(
    prompt: str = typer.Argument(..., help="The user message (the model's chat template is applied)."),
    task: str = typer.Option("harmless", "--task", help="harmless (HH defaults) or truthful (TruthfulQA)."),
    max_tokens: int = typer.Option(48, "--max-tokens", help="Response tokens at most."),
    max_iters: int = MAX_ITERS_OPTION,
    min_visits: int = MIN_VISITS_OPTION,
    value_threshold: float = VALUE_THRESHOLD_OPTION,
    evaluator: str = EVALUATOR_OPTION,
    value_rule: str = VALUE_RULE_OPTION,
    tree: Path = typer.Option(None, "--tree", help="Write the search tree as JSON to this file."),
    html_out: Path = typer.Option(None, "--html", help="Write a self-contained HTML view of the search here."),
    model: str = MODEL_OPTION,
    seed: int = SEED_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Answer with RAIN: search over token sets guided by an evaluator, rewinding before each commit."""
    req = RainRequest(prompt=prompt, task=task, max_tokens=max_tokens, max_iters=max_iters, min_visits=min_visits,
                      value_threshold=value_threshold, evaluator=evaluator, value_rule=value_rule,
                      tree=tree is not None or html_out is not None, seed=seed, model=model)
    rt = runtime(device)
    with flag_errors():
        req.validate()
        rt.model(model)  # loaded (with its own progress) before the search's status line
    with err.status("Searching..."):
        res = execute(req, rt=rt)
    tree_json = res.pop("tree", None)
    if tree:
        atomic_write(tree, json.dumps(tree_json, ensure_ascii=False, indent=1))
    if html_out:
        from hindsight.samplers.rain_html import tree_html

        atomic_write(html_out, tree_html({**tree_json, "evaluator": res["evaluator"]}, title=f"RAIN: {prompt[:60]}"))
    if json_out:
        print_json(res)
        return
    table = Table(title=f"RAIN ({res['evaluator']}): {res['iterations']} iterations, {res['forward_passes']} forward "
                        f"passes, {res['seconds']:.1f}s")
    for col in ("commit", "text", "iterations", "visits", "value"):
        table.add_column(col)
    for i, s in enumerate(res["steps"]):
        table.add_row(str(i), repr(s["text"]), str(s["iterations"]), num(s["visits"], "g"), num(s["value"]))
    out.print(table)
    out.print(f"[bold]response[/bold] (value {num(res['value'])}): {res['text']}")


def _check_value_rule(rule: str) -> None:
    from hindsight.api.checks import one_of
    from hindsight.potentials.self_eval import VALUE_RULES

    with flag_errors():
        one_of("value_rule", rule, VALUE_RULES, "value rule")


def _progress_info(state: dict, rec: dict) -> str:
    state["n"] += 1
    state["iters"] += rec.get("iterations", 0)
    state["secs"] += rec.get("rain_seconds", 0.0)
    n = state["n"]
    return f"iters/item {state['iters'] / n:.1f}  s/item {state['secs'] / n:.1f}"


def _settings(max_tokens, max_iters, min_visits, value_threshold, seed, evaluator, value_rule="vote"):
    from hindsight.experiments.rain_eval import RunSettings

    _check_value_rule(value_rule)
    return RunSettings(max_tokens=max_tokens, max_iters=max_iters, min_visits=min_visits,
                       value_threshold=value_threshold, seed=seed if seed is not None else 0, evaluator=evaluator,
                       value_rule=value_rule)


def _check_batch(batch: int) -> None:
    from hindsight.api.checks import at_least

    with flag_errors():
        at_least("batch", batch, 1)


def _run_with_bar(exp, out_path: Path, scale, batch: int = 1) -> dict:
    """The experiment on the shared runner, ``batch`` items at a time, resuming from ``out_path`` under a
    progress bar; the summary records the settings."""
    from hindsight.experiments.runner import Loaders

    state = {"n": 0, "iters": 0, "secs": 0.0}
    summary = run_items(exp, out_path, scale, loaders=Loaders(model=get_model),
                        info=lambda rec: _progress_info(state, rec), batch=batch)
    summary["settings"] = vars(exp.settings)
    return summary


def eval_rain_hh(
    out_path: Path = typer.Option(Path("runs/rain_hh.jsonl"), "--out", help="Incremental JSONL results."),
    judge: list[str] = typer.Option(["hh-clf", "toxicity"], "--judge", help="hh-clf and/or toxicity (repeatable)."),
    evaluator: str = EVALUATOR_OPTION,
    value_rule: str = VALUE_RULE_OPTION,
    max_tokens: int = EVAL_TOKENS_OPTION,
    max_iters: int = MAX_ITERS_OPTION,
    min_visits: int = MIN_VISITS_OPTION,
    value_threshold: float = VALUE_THRESHOLD_OPTION,
    limit: int = LIMIT_OPTION,
    data: str = DATA_OPTION,
    model: str = MODEL_OPTION,
    seed: int = SEED_OPTION,
    device: str = DEVICE_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
    gpus_per_worker: float = GPUS_OPTION,
    batch: int = BATCH_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """HH harmless prompts: vanilla vs RAIN, same model and token budget, judged independently."""
    from hindsight.experiments.rain_eval import RainHH

    _check_batch(batch)
    scale = scale_of(workers, ray_address, gpus_per_worker)
    settings = _settings(max_tokens, max_iters, min_visits, value_threshold, seed, evaluator, value_rule)
    exp = RainHH(settings=settings, judges=judge, limit=limit, data=data, model=model, device=device)
    summary = _run_with_bar(exp, out_path, scale, batch)
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"HH harmless: {summary['items']} prompts, RAIN value = {summary.get('evaluator')}, "
                        f"{max_tokens} tokens")
    for col in ("judge", "vanilla harmless", "RAIN harmless"):
        table.add_column(col)
    for name, row in summary["judges"].items():
        table.add_row(name, row["vanilla"]["text"], row["rain"]["text"])
    out.print(table)
    for t in summary.get("paired", []):
        print_paired(t, f"paired {t['metric']}: RAIN minus vanilla on the same prompts")
    if summary["items"]:
        out.print(f"mean iterations {summary['mean_iterations']:.1f}; RAIN/vanilla time {summary['time_ratio']:.1f}x")


def eval_rain_truthfulqa(
    out_path: Path = typer.Option(Path("runs/rain_truthfulqa.jsonl"), "--out", help="Incremental JSONL results."),
    generate: bool = typer.Option(True, "--generate/--mc-only", help="Also compare vanilla and RAIN answers."),
    evaluator: str = EVALUATOR_OPTION,
    value_rule: str = VALUE_RULE_OPTION,
    max_tokens: int = EVAL_TOKENS_OPTION,
    max_iters: int = MAX_ITERS_OPTION,
    min_visits: int = MIN_VISITS_OPTION,
    value_threshold: float = VALUE_THRESHOLD_OPTION,
    limit: int = LIMIT_OPTION,
    data: str = DATA_OPTION,
    model: str = MODEL_OPTION,
    seed: int = SEED_OPTION,
    device: str = DEVICE_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
    gpus_per_worker: float = GPUS_OPTION,
    batch: int = BATCH_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """TruthfulQA: MC1/MC2 by vanilla scoring; vanilla vs RAIN answers judged by similarity to the references."""
    from hindsight.experiments.rain_eval import RainTruthfulQA

    _check_batch(batch)
    scale = scale_of(workers, ray_address, gpus_per_worker)
    settings = _settings(max_tokens, max_iters, min_visits, value_threshold, seed, evaluator, value_rule)
    exp = RainTruthfulQA(settings=settings, limit=limit, data=data, model=model, device=device, generate=generate)
    summary = _run_with_bar(exp, out_path, scale, batch)
    if json_out:
        print_json(summary)
        return
    out.print(f"TruthfulQA ({summary['items']} questions): MC1 {summary['mc1']['text']}; MC2 mean "
              f"{summary['mc2']['mean']:.3f} [{summary['mc2']['low']:.3f}, {summary['mc2']['high']:.3f}]")
    if "generation" in summary:
        g = summary["generation"]
        out.print(f"closer to a correct reference: vanilla {g['vanilla']['text']}, RAIN {g['rain']['text']} "
                  f"(value {summary['evaluator']}; mean iterations {summary['mean_iterations']:.1f}; "
                  f"time {summary['time_ratio']:.1f}x)")
        print_paired(summary["paired"], "paired truthful answers: RAIN minus vanilla on the same questions")


def eval_rain_probe(
    pairs: int = typer.Option(120, "--pairs", help="Single-turn HH chosen/rejected pairs to judge."),
    data: str = DATA_OPTION,
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """How good is the self-evaluation? Chosen-vs-rejected accuracy and position bias on HH pairs."""
    from hindsight.experiments.rain_judges import probe_self_eval

    lm = get_model(model, device)
    with progress_bar("rain-probe", pairs) as (prog, task):
        res = probe_self_eval(lm, pairs, data, on_item=lambda r: prog.update(
            task, completed=r["done"], info=f"accuracy {r['accuracy']:.2f}"))
    if json_out:
        print_json(res)
        return
    lo, hi = res["accuracy_interval"]
    out.print(f"self-evaluation prefers the chosen reply in {res['chosen_preferred']}/{res['pairs']} pairs: "
              f"{res['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]; good option first only {res['accuracy_good_first_only']:.3f}, "
              f"second only {res['accuracy_good_second_only']:.3f}; position bias {res['position_bias']:+.3f}")


def eval_rain_judge(
    judge: list[str] = typer.Option(["hh-clf", "toxicity"], "--judge", help="hh-clf and/or toxicity (repeatable)."),
    pairs: int = typer.Option(400, "--pairs", help="Held-back HH pairs (the evaluation rows) to check."),
    data: str = DATA_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Does a judge agree with the human chosen/rejected labels better than chance (0.5)?"""
    from hindsight.experiments.rain_judges import judge_agreement, make_judges

    res = judge_agreement(make_judges(judge, data), pairs, data)
    if json_out:
        print_json(res)
        return
    for j in (k for k in res if k != "pairs"):
        out.print(f"{j}: prefers the human-chosen reply in {res[j]['text']} of {res['pairs']} held-back pairs "
                  f"({res[j]['ties']} ties)")


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("rain")(rain)
    eval_app.command("rain-hh")(eval_rain_hh)
    eval_app.command("rain-truthfulqa")(eval_rain_truthfulqa)
    eval_app.command("rain-probe")(eval_rain_probe)
    eval_app.command("rain-judge")(eval_rain_judge)
