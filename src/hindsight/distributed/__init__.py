"""The item runner on Ray actors (the optional ``hindsight[ray]`` extra).

Nothing here imports Ray at import time: :func:`require_ray` does, when a run asks for workers.
"""

from __future__ import annotations

from hindsight.distributed.options import Scale, require_ray

__all__ = ["Scale", "require_ray", "ray_executor"]


def ray_executor(scale: Scale, **kwargs):
    """A :class:`~hindsight.distributed.ray_executor.RayExecutor` for ``scale`` (imports Ray)."""
    from hindsight.distributed.ray_executor import RayExecutor

    return RayExecutor(scale, **kwargs)
