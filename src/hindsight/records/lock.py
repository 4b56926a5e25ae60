"""An exclusive lock on a result file, so two runs pointed at one ``--out`` cannot interleave their appends.

The lock is an ``fcntl.flock`` on a sibling ``<file>.lock`` (the result file itself is replaced by repairs and
may not exist yet). The kernel drops it when the process dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hindsight.errors import HindsightError


@contextmanager
def lock_results(path: str | Path | None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block, or refuse at once with one sentence (None: no file)."""
    if path is None:
        yield
        return
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HindsightError(f"{path} is being written by another run; wait for it to finish or choose "
                                 "another --out.") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
