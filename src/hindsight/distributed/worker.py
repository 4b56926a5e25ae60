"""What runs inside one Ray actor: the experiment rebuilt from its config, set up once, then item after item.

This module does not import Ray: :mod:`hindsight.distributed.ray_executor` wraps :class:`Worker` as an actor.
Errors raised by the experiment come back as values (the exception itself), so the driver can raise the very
exception the in-process runner would have raised; only a dying process reaches the driver as a Ray error.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from hindsight.experiments.runner import Experiment, Item, Loaders, Record


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class Worker:
    """One experiment on one actor: ``prepare`` loads its models once, ``run`` answers a batch of items."""

    def __init__(self, cls: type[Experiment], config: dict[str, Any], threads: int, loaders: Loaders | None) -> None:
        self.cls, self.config, self.loaders = cls, config, loaders
        self.experiment: Experiment | None = None
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)

    def prepare(self) -> BaseException | int:
        """Rebuild the experiment and load its models; the process id, or the exception that stopped it."""
        try:
            self.experiment = self.cls.from_config(self.config)
            self.experiment.prepare(self.loaders)
        except Exception as e:  # noqa: BLE001 - handed to the driver, which raises it
            return _portable(e)
        return os.getpid()

    def run(self, items: list[Item]) -> tuple[list[Record], BaseException | None]:
        """The records of ``items`` in order, up to the first item that raised (and that exception); an experiment
        with its own ``run_batch`` answers the whole call with it (none of its records when it raised)."""
        if self.experiment is None or self.experiment.parts is None:
            return [], RuntimeError("run called on a worker that is not prepared")
        done: list[Record] = []
        if len(items) > 1 and type(self.experiment).run_batch is not Experiment.run_batch:
            try:  # the experiment shares work among items (RAIN's searches): all or nothing for this call
                return self.experiment.run_batch(items), None
            except Exception as e:  # noqa: BLE001
                return [], _portable(e)
        for item in items:
            try:
                done.append(self.experiment.run_item(item))
            except Exception as e:  # noqa: BLE001
                return done, _portable(e)
        return done, None
