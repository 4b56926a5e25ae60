"""The small pieces every layer needs, written once: where caches live, seeded generators, atomic writes.

This module imports nothing from hindsight except ``errors``, so ``lm/`` (the lowest layer) can use it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch


def cache_root() -> Path:
    """Where converted models and trained classifiers live.

    ``$HINDSIGHT_CACHE``, else ``$XDG_CACHE_HOME/hindsight``, else ``~/.cache/hindsight``.
    """
    env = os.environ.get("HINDSIGHT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hindsight"


def fresh_seed() -> int:
    """A seed from the clock, for runs the user did not seed (recorded so they can be repeated)."""
    return int(time.time_ns() % (2**31))


def seeded_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded with ``seed`` (or from the clock when None): one place decides both."""
    gen = torch.Generator(device=device)
    gen.manual_seed(fresh_seed() if seed is None else int(seed))
    return gen


def temp_path(path: Path) -> Path:
    """A sibling temporary name for ``path``, unique to this process (hidden, same folder = same filesystem)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write a whole file so that readers see the old or the new version, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    mode, kw = ("wb", {}) if isinstance(data, bytes) else ("w", {"encoding": "utf-8"})
    with open(tmp, mode, **kw) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished directory (written at ``temp_path(target)``) into place; an older version is renamed
    away first, then deleted, so readers see a whole directory or none."""
    old = temp_path(target.with_name(target.name + ".old"))
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)
