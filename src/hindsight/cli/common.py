"""What every command shares: consoles, model loading with visible progress, JSON output, options."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from hindsight.api import InvalidRequest, Request, Runtime, run
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


def flag(param: str) -> str:
    """The CLI flag of a request field: ``max_tokens`` -> ``--max-tokens``."""
    return "--" + param.replace("_", "-")


def runtime(device: str | None = None, quiet: bool = False) -> Runtime:
    """The CLI's runtime: any model name or path, loaded with visible progress."""
    return Runtime(device=device, allow_paths=True, loader=lambda name, dev: get_model(name, dev, quiet=quiet))


@contextmanager
def flag_errors():
    """An invalid request field is reported under its CLI flag (``max_tokens`` -> ``--max-tokens``)."""
    try:
        yield
    except InvalidRequest as e:
        raise e.renamed(flag(e.param)) from None


def execute(request: Request, device: str | None = None, rt: Runtime | None = None) -> dict[str, Any]:
    """Run one request on the CLI's runtime (or ``rt``)."""
    with flag_errors():
        return run(request, rt or runtime(device))


def execute_with_progress(request: Request, device: str | None, what: str, quiet: bool) -> dict[str, Any]:
    """``execute`` with a live line on stderr (tokens, tokens/s) for commands that take a while; none when
    ``quiet`` (``--json``) or when stderr is not a terminal."""
    from hindsight.cli.ticker import ticker

    if quiet or not err.is_terminal:
        return execute(request, device, runtime(device, quiet=quiet))
    loaded: dict[str, LanguageModel] = {}

    def load(name: str | None, dev: str | None) -> LanguageModel:
        lm = get_model(name, dev, quiet=True)  # the ticker's line says "loading" meanwhile
        loaded.setdefault("lm", lm)
        return lm

    with ticker(what, lambda: loaded.get("lm"), err):
        return execute(request, device, Runtime(device=device, allow_paths=True, loader=load))


def num(x: float | None, spec: str = ".3f") -> str:
    """A number for a table; ``None`` (a non-finite value in a result) prints as its JSON reason would."""
    return "-" if x is None else format(x, spec)


def print_json(obj: Any) -> None:
    """Strict JSON: a non-finite number prints as null and is listed with its value under ``nonfinite``."""
    from hindsight.api.run import json_result

    clean = json_result(obj) if isinstance(obj, dict) else obj
    sys.stdout.write(json.dumps(clean, ensure_ascii=False, indent=2, allow_nan=False, default=str) + "\n")
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
