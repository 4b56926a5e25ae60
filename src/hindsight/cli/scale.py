"""Options and the run loop every result-writing command shares: the lock on ``--out``, the progress bar
(items done, items/s, workers alive) and, with ``--workers`` / ``--ray-address``, the Ray executor."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from hindsight.cli.common import err, progress_bar
from hindsight.distributed.options import Scale, require_ray
from hindsight.records.lock import lock_results

WORKERS_OPTION = typer.Option(None, "--workers", help="Run the items on N Ray workers (a local Ray, or the "
                                                      "cluster of --ray-address); needs Ray, the 'ray' extra.")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS",
                                  help="Join this Ray cluster (started with `ray start --head`) and use its workers.")
GPUS_OPTION = typer.Option(0.0, "--gpus-per-worker", help="GPUs each worker asks Ray for (0.5: two share one GPU).")


def scale_of(workers: int | None, address: str | None, gpus_per_worker: float) -> Scale:
    """The checked settings; asking for workers without Ray installed is one sentence, before anything loads."""
    scale = Scale(workers=workers, address=address or None, gpus_per_worker=gpus_per_worker)
    scale.check()
    if scale.distributed:
        require_ray()
    return scale


class Meter:
    """The progress bar's line: items run this time, items/s, workers alive, failures."""

    def __init__(self, scale: Scale, info: Callable[[dict], str]) -> None:
        self.scale, self.info = scale, info
        self.start = time.perf_counter()
        self.ran = self.failed = 0
        self.alive: tuple[int, int] | None = None
        self.last = ""

    def record(self, rec: dict | None) -> str:
        from hindsight.experiments.runner import FAILED

        if rec is not None:
            self.ran += 1
            self.failed += FAILED in rec
            self.last = "" if FAILED in rec else self.info(rec)
        return self.line()

    def line(self) -> str:
        rate = self.ran / max(time.perf_counter() - self.start, 1e-9)
        parts = [f"{rate:.2f} items/s"] if self.ran else []
        if self.alive is not None:
            parts.append(f"workers {self.alive[0]}/{self.alive[1]}")
        if self.failed:
            parts.append(f"failed {self.failed}")
        return "  ".join(parts + ([self.last[:60]] if self.last else []))


def run_items(exp, out_path: str | Path, scale: Scale, *, loaders=None, info: Callable[[dict], str] = lambda r: "",
              results=None, batch: int = 1) -> Any:
    """``exp`` on the shared runner under a progress bar, resuming from ``out_path`` (locked for the run);
    on Ray workers when ``scale`` says so. ``results``: the already-opened file (the caller holds the lock).
    ``batch``: items run together (``Experiment.run_batch``), in this process or per call to a Ray worker."""
    from hindsight.experiments.runner import require_items, run_experiment
    from hindsight.records.results import ResultFile

    total = len(require_items(exp, exp.items()))  # no items: one sentence, before the lock and the bar
    with lock_results(out_path if results is None else None):
        rf = results if results is not None else ResultFile(out_path, exp.key_field)
        meter = Meter(scale, info)
        with progress_bar(exp.name, total) as (prog, task):
            def status(alive: int, workers: int) -> None:
                meter.alive = (alive, workers)
                prog.update(task, info=meter.line())

            executor = None
            if scale.distributed:
                from hindsight.distributed import ray_executor

                executor = ray_executor(dataclasses.replace(scale, batch=max(scale.batch, batch)), on_status=status)
            summary = run_experiment(exp, rf, loaders=loaders, executor=executor, batch=batch,
                                     on_item=lambda rec: prog.update(task, advance=1, info=meter.record(rec)),
                                     on_pace=lambda p: prog.console.print(p.text()))
    if meter.failed:
        err.print(f"{meter.failed} items failed (their workers kept dying) and are left out of the summary; "
                  "rerun the same command to retry them.")
    return summary
