"""``hindsight models`` and ``hindsight generate``: the packaged model and plain sampling."""

from __future__ import annotations

import typer
from rich.table import Table

from hindsight.api import GenerateRequest
from hindsight.cli.common import (DEVICE_OPTION, JSON_OPTION, MODEL_OPTION, SEED_OPTION, execute, num, out,
                                  print_json)
from hindsight.lm.registry import cache_root, describe


def models(json_out: bool = JSON_OPTION) -> None:
    """List the known models, which is the default, and where each is cached."""
    rows = describe()
    if json_out:
        print_json({"cache": str(cache_root()), "models": rows})
        return
    table = Table(title="Known models")
    for col in ("name", "default", "cached", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "yes" if r["default"] else "", "yes" if r["cached"] else "no (on first use)",
                      f"{r['description']}; from {r['source']}")
    out.print(table)
    for r in rows:
        out.print(f"{r['name']}: {r['path']}", soft_wrap=True)
    out.print("Any local transformers checkpoint directory also works: --model PATH")


def generate(
    prompt: str = typer.Argument(..., help="The user message (the model's chat template is applied)."),
    model: str = MODEL_OPTION,
    n: int = typer.Option(1, "--n", "-n", help="Number of samples (they share one prefill of the prompt)."),
    max_tokens: int = typer.Option(64, "--max-tokens", help="New tokens per sample at most."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="0 is greedy."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass."),
    top_k: int = typer.Option(0, "--top-k", help="Keep the k most likely tokens (0 = off)."),
    stop: list[str] = typer.Option([], "--stop", help="Stop a sample when this text appears (repeatable)."),
    raw: bool = typer.Option(False, "--raw", help="Use the prompt as plain text, without the chat template."),
    seed: int = SEED_OPTION,
    device: str = DEVICE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Sample completions from a model."""
    res = execute(GenerateRequest(prompt=prompt, n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                  top_k=top_k, stop=stop, raw=raw, seed=seed, model=model), device)
    if json_out:
        print_json(res)
        return
    table = Table(title=f"{res['model']}: {n} sample(s), {res['seconds']:.1f}s")
    table.add_column("#", justify="right")
    table.add_column("text")
    table.add_column("tokens", justify="right")
    table.add_column("log p", justify="right")
    table.add_column("end")
    for i, s in enumerate(res["samples"]):
        table.add_row(str(i), s["text"], str(len(s["tokens"])), num(s["logprob"], ".2f"), s["finish_reason"])
    out.print(table)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("generate")(generate)
