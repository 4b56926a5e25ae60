"""Contract checks for what users plug into hindsight: potentials, twists and RAIN evaluators.

Each contract is a mixin class whose ``test_*`` methods pytest collects. Subclass it, say how to build the
object and on what inputs, and every check runs::

    from hindsight.testing import PotentialContract

    class TestMyPotential(PotentialContract):
        def make(self):
            return MyPotential()

        def inputs(self):
            return ["a text", "another text"], [[1, 2], [3]]

The checks are also plain functions (``check_potential``, ``check_twist``, ``check_evaluator``) that raise
``AssertionError`` with a sentence saying what broke, for use outside pytest. The samplers rely on these
properties: a batch scored at once must equal the same texts scored one by one (particles are batched in any
grouping), values are finite or ``-inf`` (never NaN or ``+inf``: weights would be poisoned), and the same input
gives the same value (a seeded run must repeat).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from hindsight.lm.base import DecodeState, LanguageModel


def _finite_or_minus_inf(values: torch.Tensor, what: str) -> None:
    assert not torch.isnan(values).any(), f"{what} returned NaN."
    assert not (values == math.inf).any(), f"{what} returned +inf."


def _same(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 1e-5) -> None:
    """Equal where finite, and -inf in the same places."""
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ."
    finite = torch.isfinite(a)
    assert torch.equal(finite, torch.isfinite(b)), f"{what}: -inf in different places."
    assert torch.allclose(a[finite].double(), b[finite].double(), atol=atol), f"{what}: values differ."


# ---- potentials --------------------------------------------------------------------------------------------
def check_potential(make: Callable[[], Any], texts: Sequence[str], tokens: Sequence[Sequence[int]]) -> None:
    """Every property the samplers need of a potential (``make()`` builds one; called twice)."""
    pot = make()
    batch = pot.log_phi(list(texts), [list(t) for t in tokens])
    assert batch.shape == (len(texts),), f"log_phi of {len(texts)} texts has shape {tuple(batch.shape)}."
    assert batch.dtype == torch.float64, f"log_phi must be float64 (got {batch.dtype})."
    _finite_or_minus_inf(batch, "log_phi")
    single = torch.cat([pot.log_phi([t], [list(k)]) for t, k in zip(texts, tokens)])
    _same(batch, single, "log_phi of a batch vs one text at a time")
    assert torch.equal(batch, pot.log_phi(list(texts), [list(t) for t in tokens])), "log_phi is not deterministic."
    assert torch.equal(batch, make().log_phi(list(texts), [list(t) for t in tokens])), \
        "Two potentials built the same way disagree."


class PotentialContract:
    """Define ``make()`` (a fresh potential) and ``inputs()`` (texts and their token ids)."""

    def make(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def inputs(self) -> tuple[list[str], list[list[int]]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_potential_contract(self) -> None:
        check_potential(self.make, *self.inputs())

    def test_inputs_tell_values_apart(self) -> None:
        """A potential that gives every input the same value steers nothing: the inputs must tell apart."""
        texts, toks = self.inputs()
        assert len(set(self.make().log_phi(texts, toks).tolist())) > 1, "Every input got the same log_phi."


# ---- twists ------------------------------------------------------------------------------------------------
def probe_state(lm: LanguageModel, prompt_ids: Sequence[int], n: int = 4, steps: int = 2, seed: int = 0
                ) -> DecodeState:
    """A decoding state whose ``n`` rows have taken ``steps`` different random tokens after the prompt."""
    state = lm.start(list(prompt_ids), n)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        lm.step(state, torch.randint(0, lm.vocab_size, (n,), generator=gen).to(lm.device))
    return state


def check_twist(make: Callable[[], Any], lm: LanguageModel, prompt_ids: Sequence[int], n: int = 4,
                steps: int = 2) -> None:
    """``log_psi(state)`` is ``[n, V]``, finite or -inf, deterministic, and row i equals row i scored alone."""
    twist = make()
    state = probe_state(lm, prompt_ids, n, steps)
    out = twist.log_psi(state).cpu()
    assert out.shape == (n, lm.vocab_size), f"log_psi has shape {tuple(out.shape)}, not {(n, lm.vocab_size)}."
    _finite_or_minus_inf(out, "log_psi")
    assert torch.equal(out, twist.log_psi(state).cpu()), "log_psi is not deterministic."
    for i in range(n):
        alone = twist.log_psi(lm.select(state, torch.tensor([i], device=lm.device))).cpu()
        _same(out[i : i + 1], alone, f"log_psi of row {i} in a batch vs alone", atol=1e-4)


class TwistContract:
    """Define ``make()`` (a fresh twist) and ``model()`` (the language model and prompt ids it runs on)."""

    def make(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def model(self) -> tuple[LanguageModel, list[int]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_twist_contract(self) -> None:
        lm, prompt_ids = self.model()
        check_twist(self.make, lm, prompt_ids)


# ---- evaluators --------------------------------------------------------------------------------------------
def check_evaluator(make: Callable[[], Any], prompt: str, responses: Sequence[str]) -> None:
    """``values`` are float64 in [-1, 1], one per response, deterministic, and equal one response at a time."""
    ev = make()
    vals = ev.values(prompt, list(responses))
    assert vals.shape == (len(responses),), f"values of {len(responses)} responses has shape {tuple(vals.shape)}."
    assert vals.dtype == torch.float64, f"values must be float64 (got {vals.dtype})."
    assert torch.isfinite(vals).all() and (vals.abs() <= 1).all(), "values must be finite and in [-1, 1]."
    fresh = make()  # a new evaluator: nothing memoised from the batch
    single = torch.cat([fresh.values(prompt, [r]) for r in responses])
    _same(vals, single, "values of a batch vs one response at a time")
    assert torch.equal(vals, make().values(prompt, list(responses))), "values are not deterministic."


class EvaluatorContract:
    """Define ``make()`` (a fresh evaluator) and ``inputs()`` (a prompt and responses to it)."""

    def make(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def inputs(self) -> tuple[str, list[str]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_evaluator_contract(self) -> None:
        check_evaluator(self.make, *self.inputs())
