"""How a run is spread out: the ``--workers`` / ``--ray-address`` / ``--gpus-per-worker`` settings."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from hindsight.errors import HindsightError


@dataclass
class Scale:
    """Where items run. ``workers=None`` with no ``address``: in this process (Ray never imported).

    ``address`` joins a running cluster ("auto", "ray://host:10001", "host:6379"); without it a local Ray is
    started for the run and stopped after it. ``workers=None`` on a cluster: as many as its resources fit.
    """

    workers: int | None = None
    address: str | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads: int = 1  # torch threads per actor
    batch: int = 1  # items per call to an actor
    in_flight: int = 2  # calls queued per actor, so it never waits for the driver
    retries: int = 2  # times an item is re-sent after the actor running it died

    @property
    def distributed(self) -> bool:
        return self.workers is not None or bool(self.address)

    def check(self) -> None:
        """Each setting in range, as one sentence naming its flag."""
        if self.workers is not None and self.workers < 1:
            raise HindsightError(f"--workers must be at least 1 (got {self.workers}).")
        if self.gpus_per_worker < 0:
            raise HindsightError(f"--gpus-per-worker must be 0 or more (got {self.gpus_per_worker}).")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise HindsightError(f"--gpus-per-worker above 1 must be a whole number (got {self.gpus_per_worker}).")
        if self.cpus_per_worker <= 0 or self.threads < 1 or self.batch < 1 or self.in_flight < 1:
            raise HindsightError("CPUs per worker must be positive, and threads, batch and in-flight calls at least 1.")
        if self.retries < 0:
            raise HindsightError(f"The retry limit must be 0 or more (got {self.retries}).")


def require_ray() -> Any:
    """The ``ray`` module, or one sentence naming the extra that provides it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise HindsightError('--workers and --ray-address need Ray, which is not installed; install it with '
                             'pip install "hindsight[ray]".') from None
