"""Result files that survive interruption: append-only JSONL, one record per finished item, keyed.

A run opens its file, skips the keys already there, and appends each new record as soon as it is done (flushed
and fsynced), so Ctrl-C loses at most the item in progress and rerunning the same command resumes.
Summaries and other whole-file outputs are written with :func:`hindsight.infra.atomic_write` (temp file + rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hindsight.errors import HindsightError


class ResultFile:
    """An append-only JSONL file of records that each carry a unique ``key_field``.

    ``path=None`` keeps the records in memory only (a run that was asked not to write a file).
    """

    def __init__(self, path: str | Path | None, key_field: str = "id") -> None:
        self.path = None if path is None else Path(path)
        self.key_field = key_field
        self._records: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            for rec in self._read():
                self._records[str(rec[key_field])] = rec

    def _read(self) -> Iterator[dict[str, Any]]:
        with open(self.path, encoding="utf-8") as f:
            lines = f.readlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):  # a record cut off by an interruption: drop it, it will be redone
                    continue
                raise HindsightError(f"{self.path} line {n} is not valid JSON; fix or delete the file.") from None
            if self.key_field not in rec:
                raise HindsightError(f"{self.path} line {n} has no {self.key_field!r} field.")
            yield rec

    def __contains__(self, key: object) -> bool:
        return str(key) in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The latest record of each key, in the order the keys first appeared in the file."""
        return iter(list(self._records.values()))

    def get(self, key: object, default: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The latest record stored under ``key`` (keys compare as strings), or ``default``."""
        return self._records.get(str(key), default)

    def keys(self) -> list[str]:
        """Every key in the file (as strings), in first-appearance order."""
        return list(self._records)

    def values(self) -> list[dict[str, Any]]:
        """The latest record of each key, in first-appearance order."""
        return list(self._records.values())

    def select(self, keys: Iterable[object]) -> list[dict[str, Any]]:
        """The records of ``keys`` that are present, in the order of ``keys`` (the missing ones left out)."""
        return [self._records[str(k)] for k in keys if str(k) in self._records]

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line (flushed and fsynced) and make it the latest record of its key."""
        key = str(record[self.key_field])
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair_tail()
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self._records[key] = record

    def _repair_tail(self) -> None:
        """Drop a half-written last line left by a crash, so appends start on a clean line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            data = self.path.read_bytes()
            cut = data.rfind(b"\n") + 1
            f.truncate(cut)

