"""How many CPU threads torch may use. Chosen once, when the first model is loaded.

torch's default (one thread per core) makes every command several times slower on a machine whose cores are
already busy: threads wait on each other. So: ``HINDSIGHT_THREADS`` if set; else ``OMP_NUM_THREADS`` if set
(torch reads it itself, we leave it alone); else no more threads than there are idle cores (at least one).
"""

from __future__ import annotations

import os

import torch

from hindsight.errors import HindsightError

_chosen: int | None = None


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """Usable cores minus the one-minute load average (rounded), never below one."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - not Unix
            load = 0.0
    return max(1, min(cores, cores - int(round(load))))


def thread_count(env: dict[str, str] | None = None) -> int | None:
    """The thread count to set, or None to leave torch's (because ``OMP_NUM_THREADS`` already chose it)."""
    env = os.environ if env is None else env
    explicit = env.get("HINDSIGHT_THREADS", "").strip()
    if explicit:
        if not explicit.isdigit() or int(explicit) < 1:
            raise HindsightError(f"HINDSIGHT_THREADS must be a positive whole number, not {explicit!r}.")
        return int(explicit)
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    return idle_cores()


def configure_threads() -> int:
    """Set torch's intra-op thread count once per process; returns the count in force."""
    global _chosen
    if _chosen is None:
        n = thread_count()
        if n is not None and n != torch.get_num_threads():
            torch.set_num_threads(n)
        _chosen = torch.get_num_threads()
    return _chosen
