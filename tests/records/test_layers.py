"""The low layer stays low: records/ imports nothing above it, and nothing below experiments/ imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "hindsight"


def imported_packages(folder: str) -> set[str]:
    """The ``hindsight.X`` packages imported anywhere in ``src/hindsight/<folder>`` (at any depth of a module)."""
    found = set()
    for path in (SRC / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found |= {n.split(".")[1] for n in names if n.startswith("hindsight.")}
    return found


def test_records_imports_only_the_ground_floor():
    assert imported_packages("records") <= {"records", "errors", "infra"}


@pytest.mark.parametrize("folder", ["lm", "potentials", "twists", "reverse", "samplers", "records"])
def test_lower_layers_never_import_experiments(folder):
    assert not imported_packages(folder) & {"experiments", "evaluation", "cli"}
