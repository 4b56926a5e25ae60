"""Shared fixtures for the SMC / twist / bounds tests: one thread, and one enumerable toy task.

Import the fixtures into a test module (``from tests.toy_task import one_thread, toy_task``).
"""

import pytest
import torch

T = 4  # horizon of the toy task: 121 completions, all enumerable


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny sequential runs: extra threads only fight over a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_task(toy):
    """(lm, prompt ids, potential, exact target): phi <= 1 and the target differs strongly from the model."""
    from hindsight.experiments.exact import exact_target
    from hindsight.potentials.text import Regex

    prompt = toy.encode("ab")
    pot = Regex("cc", penalty=0.02)
    return toy, prompt, pot, exact_target(toy, prompt, pot, T)
