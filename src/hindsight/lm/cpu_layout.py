"""Linear weights stored input-major on CPU: the same matrices, about twice as fast for forwards of a few rows.

``nn.Linear`` keeps its weight as ``[out, in]`` and computes ``x @ W^T``. On CPU (MKL/oneDNN sgemm, one thread)
the transposed-operand path is slow for small batches: a forward of 4-16 rows — RAIN's decoding steps, SMC
particles, a few sampled completions — spends up to twice as long in the linear layers as it would with the
weight stored ``[in, out]`` (measured on the project's CPU for SmolLM2's 576x1536 MLP and its 49152x576 head:
11 rows 1.17 ms -> 0.58 ms and 87 ms -> 44 ms; one row and 64 rows change little).

:func:`transpose_linear_weights` gives every linear layer a weight that is the transposed *view* of an
``[in, out]`` contiguous tensor: ``F.linear`` then calls sgemm without a transpose. Shapes, values, tying
(the LM head shares its matrix with the input embeddings) and ``state_dict`` keys are unchanged; only float
rounding can differ, as with any change of kernel. Applied by :func:`hindsight.lm.load_model` to CPU float32
models loaded for inference (not to models being trained, whose optimisers and checkpoints expect the usual
layout).

:func:`pack_linear_weights` goes further for forwards of 2-64 rows, where even the input-major MKL sgemm reads
the weights from memory poorly (on the project's CPU an 11-row forward cost 2.5x a one-row one, though the
matrices are read once either way): each linear layer also keeps a oneDNN-blocked copy of its weight, used
only for such forwards under ``torch.no_grad``. SmolLM2-135M: an 11-row decoding step 193 ms -> 138 ms, 2-4 rows
168 -> 117 ms; one row (which MKL's gemv streams at full memory speed) and large prefills keep the plain path.
It costs a second copy of the linear weights, so it is applied only to models whose linear weights take at
most ``PACK_LIMIT_BYTES`` (``HINDSIGHT_CPU_PACK=0`` turns it off, ``=1`` lifts the limit). The copy follows
the weight: it is made at a layer's first forward of a few rows, and a weight modified in place (a training
step) or replaced is packed again before its next packed forward.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

PACKED_ROWS = (2, 64)  # forwards with this many rows (inclusive) use the packed copy
PACK_LIMIT_BYTES = 2 << 30  # pack only models whose linear weights take at most this (the copy doubles it)


def transpose_linear_weights(model: nn.Module) -> int:
    """Store every ``nn.Linear`` weight of ``model`` input-major (in place); returns how many were changed.

    A weight shared by several modules (tied embeddings) is converted once and stays shared.
    """
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            holders.setdefault(id(p), []).append((module, name))
    changed = 0
    for module in list(model.modules()):
        w = module.weight if isinstance(module, nn.Linear) else None
        if w is None or w.device.type != "cpu" or w.dtype != torch.float32 or w.dim() != 2:
            continue
        if w.shape[0] > 1 and w.stride(0) == 1:
            continue  # already input-major (or converted through a module that shares it)
        new = nn.Parameter(w.detach().t().contiguous().t(), requires_grad=w.requires_grad)
        for holder, name in holders.get(id(w), [(module, "weight")]):
            setattr(holder, name, new)
        changed += 1
    return changed


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 16)


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` that also holds a oneDNN-blocked copy of its weight for forwards of a few rows."""

    _packed: torch.Tensor | None
    _packed_src: torch.Tensor | None  # the weight it was packed from
    _packed_version: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        shape = x.shape
        rows = shape[0] * shape[1] if len(shape) == 3 else shape[0] if len(shape) == 2 else 1
        if (PACKED_ROWS[0] <= rows <= PACKED_ROWS[1] and not torch.is_grad_enabled() and x.dtype == torch.float32
                and x.is_cpu):
            weight = self.weight
            if weight is not self._packed_src or weight._version != self._packed_version:  # replaced or modified
                self._packed, self._packed_src, self._packed_version = _pack(weight), weight, weight._version
            return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def packing_available() -> bool:
    """Whether this torch build has the oneDNN linear kernels (and they agree with ``F.linear``)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        g = torch.Generator().manual_seed(0)
        w, x = torch.randn(24, 40, generator=g), torch.randn(5, 40, generator=g)
        y = torch.ops.mkldnn._linear_pointwise(x, _pack(w), None, "none", [], "")
        return bool(torch.allclose(y, x @ w.T, rtol=1e-4, atol=1e-4))
    except (RuntimeError, AttributeError):  # pragma: no cover - a build without them
        return False


def pack_linear_weights(model: nn.Module, *, limit_bytes: int | None = None,
                        env: dict[str, str] | None = None) -> int:
    """Let every CPU float32 ``nn.Linear`` of ``model`` use a packed copy of its weight (see the module docstring),
    made at its first forward of a few rows; returns how many layers will (0 when it is off, over the limit or
    unavailable)."""
    env = os.environ if env is None else env
    setting = env.get("HINDSIGHT_CPU_PACK", "")
    if setting == "0":
        return 0
    linears = [m for m in model.modules() if type(m) is nn.Linear and m.weight.device.type == "cpu"
               and m.weight.dtype == torch.float32]
    size = sum(m.weight.numel() * 4 for m in {id(m.weight): m for m in linears}.values())
    limit = PACK_LIMIT_BYTES if limit_bytes is None else limit_bytes
    if not linears or (setting != "1" and size > limit) or not packing_available():
        return 0
    for m in linears:  # each copy is made at the layer's first forward of a few rows (a process that never
        m._packed, m._packed_src, m._packed_version = None, None, -1  # runs one pays neither time nor memory)
        m.__class__ = PackedLinear
    return len(linears)
