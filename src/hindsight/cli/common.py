"""What every command shares: consoles, model loading with visible progress, JSON output, options."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from hindsight.lm import DEFAULT_MODEL, LanguageModel, load_model

out = Console()  # results
err = Console(stderr=True)  # progress and messages

MODEL_OPTION = typer.Option(
    None, "--model", "-m", help=f"A known model name (default {DEFAULT_MODEL}) or a local checkpoint directory."
)
DEVICE_OPTION = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")
SEED_OPTION = typer.Option(None, "--seed", help="Random seed; the same seed gives the same result.")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object instead of a table.")


def get_model(name: str | None, device: str | None = None, quiet: bool = False) -> LanguageModel:
    """Load a model, showing each step (obtain, verify, convert, load) on stderr as it happens."""
    if quiet:
        return load_model(name, device=device)
    with err.status("Loading model...") as status:
        return load_model(name, device=device, progress=lambda msg: status.update(f"{msg}..."))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(description: str, total: int | None):
    """A rich progress bar on stderr; yields (progress, task id)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err,
        transient=False,
    ) as prog:
        task = prog.add_task(description, total=total, info="")
        yield prog, task
