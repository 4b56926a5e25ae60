"""hindsight.testing: the shipped contracts pass on good objects and catch broken ones; importing hindsight
changes neither the environment nor any logging configuration."""

import subprocess
import sys

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.potentials.base import Potential
from hindsight.potentials.self_eval import Evaluator
from hindsight.testing import check_evaluator, check_potential, check_twist


class _Batchy(Potential):
    """Broken on purpose: a text's value depends on the batch it is scored in."""

    name = "batchy"

    def _log_phi(self, texts, tokens):
        return torch.full((len(texts),), -float(len(texts)), dtype=torch.float64)


class _NaN(Potential):
    name = "nan"

    def _log_phi(self, texts, tokens):
        return torch.full((len(texts),), float("nan"), dtype=torch.float64)


class _Length(Potential):
    name = "length"

    def _log_phi(self, texts, tokens):
        return torch.tensor([-float(len(t)) if t else -float("inf") for t in texts], dtype=torch.float64)


TEXTS, TOKS = ["a", "bbb", ""], [[1], [2, 2, 2], []]


def test_potential_contract_passes_and_catches():
    check_potential(_Length, TEXTS, TOKS)
    with pytest.raises(AssertionError, match="batch vs one text"):
        check_potential(_Batchy, TEXTS, TOKS)
    with pytest.raises((AssertionError, HindsightError), match="NaN"):  # Potential.log_phi refuses it first
        check_potential(_NaN, TEXTS, TOKS)


class _Drift:
    """Broken on purpose: every call gives other values."""

    def __init__(self, vocab: int):
        self.vocab, self.calls = vocab, 0

    def log_psi(self, state):
        self.calls += 1
        return torch.full((state.n, self.vocab), float(self.calls))


def test_twist_contract_catches_a_nondeterministic_twist(toy):
    with pytest.raises(AssertionError, match="deterministic"):
        check_twist(lambda: _Drift(toy.vocab_size), toy, toy.encode("ab"))
    with pytest.raises(AssertionError, match="shape"):
        check_twist(lambda: _Drift(toy.vocab_size + 1), toy, toy.encode("ab"))


class _OutOfRange(Evaluator):
    name = "loud"

    def values(self, prompt, responses):  # skips the base class's clamping
        return torch.full((len(responses),), 2.0, dtype=torch.float64)

    def _values(self, prompt, responses):  # pragma: no cover - not reached
        raise AssertionError


def test_evaluator_contract_catches_values_out_of_range():
    with pytest.raises(AssertionError, match=r"\[-1, 1\]"):
        check_evaluator(_OutOfRange, "q", ["a", "b"])


def test_importing_hindsight_changes_no_environment_or_logging():
    """Every module of the package is imported in a fresh interpreter (third-party imports first, so only what
    hindsight itself does is measured)."""
    code = """
import logging, os, pkgutil, importlib
import torch  # noqa: F401  (third-party import-time effects are not ours: torch's inductor sets an env var)
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401
def levels():
    names = sorted(logging.Logger.manager.loggerDict)
    out = {n: (logging.getLogger(n).level, len(logging.getLogger(n).handlers)) for n in names}
    out[""] = (logging.getLogger().level, len(logging.getLogger().handlers))
    return out
env, before = dict(os.environ), levels()
import hindsight, hindsight.lm, hindsight.potentials
for m in pkgutil.walk_packages(hindsight.__path__, "hindsight."):
    if m.name.endswith("__main__") or m.name.startswith("hindsight.distributed"):
        continue  # running the CLI is not importing; distributed is an optional extra
    importlib.import_module(m.name)
assert dict(os.environ) == env, sorted(set(os.environ.items()) ^ set(env.items()))
after = levels()
changed = {n: (before[n], after[n]) for n in before if after.get(n) != before[n]}
assert not changed, changed
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
