"""Turning a ``--device`` string into a torch device, with one sentence for a name torch does not know or a
device this machine does not have (e.g. ``cuda`` on a CPU-only torch build)."""

from __future__ import annotations

import torch

from hindsight.errors import HindsightError


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to use: ``None`` means cuda if available, else cpu."""
    if device is None:
        return default_device()
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(str(device).strip())
        except (RuntimeError, ValueError):
            raise HindsightError(f"Unknown device {device!r}; use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HindsightError(f"Device {device!r} is not available: this torch build sees no CUDA GPU; use cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HindsightError(f"Device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) visible.")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise HindsightError(f"Device {device!r} is not available on this machine; use cpu.")
    elif dev.type != "cpu":
        raise HindsightError(f"Device {device!r} is not supported; use cpu, cuda or cuda:N.")
    return dev


def check_finite(name: str, hidden: torch.Tensor, attention_mask) -> None:
    """A NaN or inf in a forward pass means damaged weights or an overflow: an error, never output."""
    if attention_mask is not None and attention_mask.dim() == 2:
        hidden = hidden[attention_mask[:, -hidden.shape[1]:].bool()]
    if not bool(torch.isfinite(hidden).all()):
        raise HindsightError(
            f"Model {name} produced NaN or infinite values in a forward pass; its weights may be damaged "
            "(run `hindsight models --verify`) or the dtype may overflow."
        )
