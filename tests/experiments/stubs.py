"""Experiments over given items instead of a data folder, for tests."""

from __future__ import annotations


def over(cls, items, **config):
    """An experiment of class ``cls`` with ``config`` whose ``items()`` are ``items``."""
    exp = cls(**config)
    exp.items = lambda: items
    return exp
