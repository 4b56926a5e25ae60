"""Finding and reading the evaluation datasets (JSONL). Data is never copied into the project.

The data root is, in order: an explicit ``--data`` path, ``$HINDSIGHT_DATA``, then ``shared/data`` found in
the current directory or one of its parents (the layout of a development checkout).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hindsight.errors import HindsightError


def find_data_root(explicit: str | Path | None = None) -> Path | None:
    """The data directory, or None when none can be found."""
    if explicit:
        p = Path(explicit).expanduser()
        return p if p.is_dir() else None
    env = os.environ.get("HINDSIGHT_DATA")
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    here = Path.cwd().resolve()
    for d in [here, *here.parents]:
        cand = d / "shared" / "data"
        if cand.is_dir():
            return cand
    repo = Path(__file__).resolve().parents[3]  # src/hindsight/records -> checkout root
    for d in [repo, *repo.parents][:3]:
        cand = d / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def data_root(explicit: str | Path | None = None) -> Path:
    root = find_data_root(explicit)
    if root is None:
        where = f"{explicit}" if explicit else "$HINDSIGHT_DATA or a shared/data folder above the current directory"
        raise HindsightError(f"No evaluation data found at {where}; pass --data DIR.")
    return root


def dataset_file(name: str, filename: str, explicit: str | Path | None = None) -> Path:
    """``<root>/<name>/<filename>``; a clear error if it is missing. ``explicit`` may also be the file."""
    if explicit and Path(explicit).is_file():
        return Path(explicit)
    root = data_root(explicit)
    for cand in (root / name / filename, root / filename):
        if cand.is_file():
            return cand
    raise HindsightError(f"{root / name / filename} does not exist; pass --data DIR pointing at the data folder.")


def read_text(path: str | Path, what: str | None = None) -> str:
    """A UTF-8 text file (``.gz`` unpacked); binary or non-UTF-8 input is one sentence naming the file.

    ``what`` names the file's role in the message (``"corpus"``: "The corpus file X looks like ...").
    """
    p = Path(path).expanduser()
    name = f"The {what} file {p}" if what else str(p)
    if not p.is_file():
        raise HindsightError(f"{name} does not exist or is not a file.")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise HindsightError(f"{name} is not a readable gzip file ({e}).") from None
    if b"\x00" in raw[:4096]:
        raise HindsightError(f"{name} looks like a binary file, not text.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise HindsightError(f"{name} is not UTF-8 text (bad byte at offset {e.start}).") from None


def read_jsonl(path: str | Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file, with a one-line error naming the line of any broken record (not JSON, not
    UTF-8, binary)."""
    if limit is not None and limit < 1:
        return
    with open(path, "rb") as f:
        count = 0
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError:
                raise HindsightError(f"{path} line {n} is not UTF-8 text (is it a binary file?).") from None
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                hint = " (it looks like a binary file)" if "\x00" in line else ""
                raise HindsightError(f"{path} line {n} is not valid JSON{hint}.") from None
            count += 1
            if limit is not None and count >= limit:
                return
