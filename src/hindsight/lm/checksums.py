"""Checksums of converted weights, so a damaged cache is noticed instead of producing NaN or gibberish.

When a cache entry is written, every file's size and sha256 go into its manifest (``hindsight.json``). Each
load checks sizes and a *sampled* hash (a few spread-out blocks: milliseconds, and it catches a file that was
overwritten, truncated or zeroed); ``hindsight models --verify`` recomputes the full hashes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MANIFEST = "hindsight.json"
_BLOCK = 1 << 16
_SAMPLES = 16


def full_digest(path: Path) -> str:
    """sha256 of the whole file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sampled_digest(path: Path) -> str:
    """sha256 over the size and ``_SAMPLES`` blocks spread evenly through the file (first and last included)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _BLOCK * _SAMPLES:
            h.update(f.read())
        else:
            step = (size - _BLOCK) / (_SAMPLES - 1)
            for i in range(_SAMPLES):
                f.seek(int(i * step))
                h.update(f.read(_BLOCK))
    return h.hexdigest()


def weight_files(folder: Path) -> list[Path]:
    """Every file of a checkpoint folder except the manifest, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def manifest_entries(folder: Path) -> dict[str, dict[str, object]]:
    """``{relative path: {size, sha256, sampled}}`` for every file of ``folder``."""
    return {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": full_digest(p), "sampled": sampled_digest(p)}
        for p in weight_files(folder)
    }


def problems(folder: Path, entries: dict[str, dict[str, object]], *, full: bool = False) -> list[str]:
    """What differs between ``folder`` and its recorded ``entries`` (empty when it checks out)."""
    found: list[str] = []
    for rel, want in entries.items():
        p = folder / rel
        if not p.is_file():
            found.append(f"{rel} is missing")
        elif os.path.getsize(p) != want.get("size"):
            found.append(f"{rel} has {os.path.getsize(p)} bytes, expected {want.get('size')}")
        elif sampled_digest(p) != want.get("sampled"):
            found.append(f"{rel} does not match its recorded checksum")
        elif full and full_digest(p) != want.get("sha256"):
            found.append(f"{rel} does not match its recorded sha256")
    return found


def fingerprint(entries: dict[str, dict[str, object]]) -> str:
    """One short content hash for a whole checkpoint (what results records cite as the weights' identity)."""
    h = hashlib.sha256()
    for rel in sorted(entries):
        h.update(f"{rel}\0{entries[rel].get('sha256')}\n".encode())
    return h.hexdigest()[:16]


def folder_fingerprint(folder: Path) -> str:
    """A content hash of a local checkpoint folder without a manifest: sizes and sampled hashes (fast)."""
    h = hashlib.sha256()
    for p in weight_files(folder):
        h.update(f"{p.relative_to(folder)}\0{sampled_digest(p)}\n".encode())
    return h.hexdigest()[:16]
