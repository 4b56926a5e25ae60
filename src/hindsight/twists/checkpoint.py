"""Twist files: a head's weights, its configuration, what it was trained for, and the optimiser (to resume).

Written atomically (temp file + rename), so an interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.infra import atomic_write
from hindsight.twists.heads import TwistHead, head_from_config

FORMAT = "hindsight-twist-1"


def save_twist(path: str | Path, head: TwistHead, meta: dict[str, Any],
               optimizer_state: dict[str, Any] | None = None) -> None:
    blob = {"format": FORMAT, "config": head.config(), "state_dict": head.state_dict(), "meta": meta,
            "optimizer": optimizer_state}
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write(path, buf.getvalue())


def load_twist(path: str | Path, device: str | torch.device = "cpu", lm: Any = None
               ) -> tuple[TwistHead, dict[str, Any], dict[str, Any] | None]:
    """(head, meta, optimizer state) from a twist file. ``lm``: the model the twist runs on (a tied head
    takes its output embeddings from it; checked to fit)."""
    path = Path(path)
    if not path.is_file():
        raise HindsightError(f"Twist file {path} does not exist.")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user-facing sentence
        raise HindsightError(f"{path} is not a readable twist file ({type(e).__name__}).") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise HindsightError(f"{path} is not a hindsight twist file.")
    head = head_from_config(blob["config"])
    state = {k: v for k, v in blob["state_dict"].items() if k != "condition"}  # older files: an empty buffer
    head.load_state_dict(state)
    head = head.to(device).eval()
    if lm is not None:
        check_twist_fits(head, lm.vocab_size, lm.hidden_size, lm.name, blob["meta"])
        head.attach(lm)
    elif head.needs_embeddings:
        raise HindsightError(f"{path} holds a tied twist head: pass the model (load_twist(path, lm=lm)).")
    return head, blob["meta"], blob.get("optimizer")


def check_twist_fits(head: TwistHead, vocab_size: int, hidden_size: int, model_name: str, meta: dict) -> None:
    """One sentence if a twist file was trained for a different model."""
    if head.vocab_size != vocab_size or head.hidden_size != hidden_size:
        raise HindsightError(f"This twist was trained for {meta.get('model', 'another model')} "
                             f"(vocabulary {head.vocab_size}, hidden {head.hidden_size}), not {model_name}.")
