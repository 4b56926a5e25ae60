"""Potentials: what to aim for. Each gives batched ``log phi(x)`` for completions ``x``.

See :mod:`hindsight.potentials.base` for the interface; every built-in potential passes the shared contract
in :mod:`hindsight.testing` (a user's own potential can use it too). :func:`parse_potential` turns a spec into a
potential.
"""

from hindsight.potentials.base import Potential, Product, Tempered
from hindsight.potentials.spec import parse_potential

__all__ = ["Potential", "Product", "Tempered", "parse_potential"]
