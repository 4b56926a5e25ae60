"""A live line on stderr while a command works: tokens processed and tokens per second.

It reads the model's cost counters from a background thread, so samplers need no callbacks. It stays quiet
under ``--json`` and when stderr is not a terminal (pipes and logs get no control characters), and it appears
only after a moment (``HINDSIGHT_PROGRESS_DELAY`` seconds, default 1.5), so quick commands print nothing extra.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console


DELAY = 1.5  # seconds before the line appears


def _delay() -> float:
    try:
        value = float(os.environ.get("HINDSIGHT_PROGRESS_DELAY", DELAY))
    except ValueError:
        return DELAY
    return value if value >= 0 else DELAY


@contextmanager
def ticker(what: str, model: Callable[[], Any], console: Console, enabled: bool = True,
           delay: float | None = None) -> Iterator[None]:
    """Show ``what: N tokens, R tokens/s, Ts`` while the block runs; ``model()`` returns the model once loaded."""
    if not enabled or not console.is_terminal:
        yield
        return
    delay = _delay() if delay is None else delay
    every = 0.5 if delay >= 0.5 else 0.1
    stop = threading.Event()
    t0 = time.perf_counter()
    start: dict[str, float] = {}

    def line() -> str:
        lm = model()
        seconds = time.perf_counter() - t0
        if lm is None:
            return f"{what}: loading the model, {seconds:.0f}s"
        if not start:
            start.update(tokens=int(lm.counters.tokens), t=time.perf_counter())
        tokens = int(lm.counters.tokens) - start["tokens"]
        rate = tokens / max(time.perf_counter() - start["t"], 1e-9)
        return f"{what}: {tokens} tokens, {rate:.0f} tokens/s, {seconds:.0f}s"

    def run() -> None:
        if stop.wait(delay):
            return
        with console.status(line()) as status:
            while not stop.wait(every):
                status.update(line())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
