"""The contract every potential passes. Subclass ``PotentialContract`` and define ``make`` and ``inputs``."""

from __future__ import annotations

import torch


class PotentialContract:
    def make(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def inputs(self) -> tuple[list[str], list[list[int]]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_batch_equals_single(self):
        pot = self.make()
        texts, toks = self.inputs()
        batch = pot.log_phi(texts, toks)
        single = torch.cat([pot.log_phi([t], [k]) for t, k in zip(texts, toks)])
        assert batch.shape == (len(texts),)
        finite = torch.isfinite(batch)
        assert torch.equal(finite, torch.isfinite(single))
        assert torch.allclose(batch[finite], single[finite], atol=1e-5)

    def test_deterministic(self):
        pot = self.make()
        texts, toks = self.inputs()
        assert torch.equal(pot.log_phi(texts, toks), pot.log_phi(texts, toks))

    def test_finite_or_minus_inf_never_nan(self):
        pot = self.make()
        texts, toks = self.inputs()
        lp = pot.log_phi(texts, toks)
        assert lp.dtype == torch.float64
        assert not torch.isnan(lp).any()
        assert not (lp == float("inf")).any()
        assert (torch.isfinite(lp) | (lp == float("-inf"))).all()

    def test_not_constant(self):
        """A potential that gives every input the same value steers nothing: the inputs must tell apart."""
        pot = self.make()
        texts, toks = self.inputs()
        lp = pot.log_phi(texts, toks)
        assert len(set(lp.tolist())) > 1
