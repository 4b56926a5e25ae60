"""Exact quantities on a model small enough to enumerate (``hindsight.lm.toy``): ``log Z``, ``sigma``, the optimal
twist ``psi_t = E[phi | s_1..t]``, proposal probabilities and KLs. Used to test the estimators against truth.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hindsight.lm.base import LanguageModel
from hindsight.lm.toy import enumerate_sequences
from hindsight.potentials.base import Potential
from hindsight.samplers.smc import run_smc
from hindsight.twists.base import TableTwist, Twist


@dataclass
class ExactTarget:
    seqs: list[tuple[int, ...]]
    logp: torch.Tensor  # [S] float64 log p(x | prompt)
    log_phi: torch.Tensor  # [S]
    log_z: float
    log_sigma: torch.Tensor  # [S] log sigma(x)

    def sample(self, k: int, generator: torch.Generator) -> list[list[int]]:
        """``k`` exact draws from sigma."""
        idx = torch.multinomial(torch.exp(self.log_sigma), k, replacement=True, generator=generator)
        return [list(self.seqs[i]) for i in idx.tolist()]


def exact_target(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, max_tokens: int) -> ExactTarget:
    seqs, logp = enumerate_sequences(lm, prompt_ids, max_tokens)
    log_phi = potential.log_phi([lm.decode(s) for s in seqs], [list(s) for s in seqs])
    joint = logp + log_phi
    log_z = float(torch.logsumexp(joint, 0))
    return ExactTarget(seqs, logp, log_phi, log_z, joint - log_z)


def optimal_twist(target: ExactTarget, vocab_size: int) -> TableTwist:
    """``log psi_t(s_1..t) = log E_p[phi(x) | s_1..t]`` for every prefix, by summing over its completions."""
    num: dict[tuple[int, ...], list[float]] = defaultdict(list)
    den: dict[tuple[int, ...], list[float]] = defaultdict(list)
    for s, lp, lphi in zip(target.seqs, target.logp.tolist(), target.log_phi.tolist()):
        for t in range(1, len(s) + 1):
            num[s[:t]].append(lp + lphi)
            den[s[:t]].append(lp)
    lse = lambda v: float(torch.logsumexp(torch.tensor(v, dtype=torch.float64), 0))  # noqa: E731
    return TableTwist({k: lse(num[k]) - lse(den[k]) for k in num}, vocab_size)


def proposal_log_weights(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, twist: Twist | None,
                         seqs: Sequence[Sequence[int]], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q(x), log w(x) = log p(x) phi(x) / q(x)) of given completions under the (twisted) proposal."""
    res = run_smc(lm, prompt_ids, potential, len(seqs), max_tokens, twist=twist, ess_threshold=0.0,
                  forced=seqs, seed=0, trace=True)
    tr = res.trace
    log_q = torch.where(tr["alive"], tr["logq"], torch.zeros_like(tr["logq"])).sum(1)
    return log_q, res.log_weights


def exact_kls(target: ExactTarget, log_q: torch.Tensor) -> tuple[float, float]:
    """(KL(q || sigma), KL(sigma || q)) given ``log q`` of every enumerated sequence."""
    q, s = torch.exp(log_q), torch.exp(target.log_sigma)
    fwd = float(torch.where(q > 0, q * (log_q - target.log_sigma), torch.zeros_like(q)).sum())
    rev = float(torch.where(s > 0, s * (target.log_sigma - log_q), torch.zeros_like(s)).sum())
    return fwd, (rev if math.isfinite(rev) else math.inf)
