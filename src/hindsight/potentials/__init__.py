"""Potentials: what to aim for. Each gives batched ``log phi(x)`` for completions ``x``.

See :mod:`hindsight.potentials.base` for the interface; every built-in potential passes the shared contract
test in ``tests/potentials/contract.py``.
"""

from hindsight.potentials.base import Potential, Product, Tempered

__all__ = ["Potential", "Product", "Tempered"]
