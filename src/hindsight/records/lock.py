"""One writer per results file: an exclusive, non-blocking lock on a sibling ``.lock`` file.

Two processes appending to the same ``--out`` would each redo the other's items and duplicate lines. The lock is
``fcntl.flock`` on ``.<name>.lock`` (never on the results file itself, which stays byte-identical when refused);
the kernel drops it when the holder exits, however it exits, so a crash leaves nothing to clean up. The holder
writes its pid into the lock file so that the refusal can name it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hindsight.errors import HindsightError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, as before
    fcntl = None  # type: ignore[assignment]

_held: dict[str, int] = {}  # resolved results path -> lock file descriptor (one per process and file)


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


class Held:
    """What :func:`lock_results` returns: ignore it to keep the lock until the process exits, or use it in a
    ``with`` block to give back at the end a lock that this call took."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            release_results(self.path)


def lock_results(path: str | Path | None) -> Held:
    """Take the writer lock for ``path`` (kept until the process exits); one sentence if another process has it."""
    if path is None:
        return Held(None)
    path = Path(path)
    key = str(path.resolve())
    if fcntl is None or key in _held:
        return Held(None)
    lock = lock_path(path)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HindsightError(f"Cannot create the folder of the results file {path} ({e.strerror}).") from None
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise HindsightError(f"Cannot write beside the results file {path} ({e.strerror}).") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            other = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            other = ""
        os.close(fd)
        who = f"process {other}" if other.isdigit() else "another process"
        raise HindsightError(f"{path} is being written by {who}; wait for it to finish or choose another --out.") \
            from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[key] = fd
    return Held(path)


def release_results(path: str | Path) -> None:
    """Give the lock back early (tests, long-lived servers); exiting the process does the same."""
    fd = _held.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)
