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
    with torch.device("meta"):  # shapes only: a configuration that claims a huge head allocates nothing
        shape = _head(path, blob.get("config"))
    state = blob.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HindsightError(f"{path} holds no twist weights (its state_dict is missing or not tensors).")
    state = {k: v for k, v in state.items() if k != "condition"}  # older files: an empty buffer
    _check_state(path, shape, state)
    head = head_from_config(blob["config"])
    head.load_state_dict(state)
    head = head.to(device).eval()
    meta = blob.get("meta") if isinstance(blob.get("meta"), dict) else {}
    if lm is not None:
        check_twist_fits(head, lm.vocab_size, lm.hidden_size, lm.name, meta)
        head.attach(lm)
    elif head.needs_embeddings:
        raise HindsightError(f"{path} holds a tied twist head: pass the model (load_twist(path, lm=lm)).")
    return head, meta, blob.get("optimizer")


def _head(path: Path, cfg: Any) -> TwistHead:
    """The (untrained) head a twist file's configuration describes; one sentence if it is missing or malformed."""
    if not isinstance(cfg, dict):
        raise HindsightError(f"{path} has no twist configuration, so it cannot be loaded (was it written by "
                             "`hindsight twist train`?).")
    for key in ("kind", "hidden_size", "vocab_size"):
        if key not in cfg:
            raise HindsightError(f"{path} has a malformed twist configuration: no {key!r}.")
    for key in ("hidden_size", "vocab_size"):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise HindsightError(f"{path} has a malformed twist configuration: {key} is {value!r}.")
    try:
        return head_from_config(cfg)
    except HindsightError as e:
        raise HindsightError(f"{path}: {e}") from None
    except (TypeError, ValueError, RuntimeError) as e:
        raise HindsightError(f"{path} has a malformed twist configuration ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:120]}).") from None


def _check_state(path: Path, head: TwistHead, state: dict[str, torch.Tensor]) -> None:
    """One sentence if the file's weights do not have the shapes its own configuration gives."""
    want = head.state_dict()
    for key, tensor in want.items():
        if key not in state:
            raise HindsightError(f"{path} is damaged: it has no weights for {key}.")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise HindsightError(
                f"{path} is damaged: its weights {key} have shape {tuple(state[key].shape)}, but its configuration "
                f"(vocabulary {head.vocab_size}, hidden {head.hidden_size}) needs {tuple(tensor.shape)}.")
    extra = sorted(set(state) - set(want))
    if extra:
        raise HindsightError(f"{path} is damaged: it holds weights its configuration has no place for ({extra[0]}).")


def check_twist_fits(head: TwistHead, vocab_size: int, hidden_size: int, model_name: str, meta: dict) -> None:
    """One sentence if a twist file was trained for a different model."""
    if head.vocab_size != vocab_size or head.hidden_size != hidden_size:
        raise HindsightError(f"This twist was trained for {meta.get('model', 'another model')} "
                             f"(vocabulary {head.vocab_size}, hidden {head.hidden_size}), not {model_name}.")
