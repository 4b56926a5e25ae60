"""The steps of SMC over a particle state: propose, reweight, resample (and a recorder for twist training).

:func:`hindsight.samplers.smc.run_smc` is a short loop over these; each step is small enough to test alone.
``N`` particles share the prompt's KV cache (one :class:`~hindsight.lm.base.DecodeState`); all per-particle
bookkeeping lives in :class:`Particles`, which :func:`resample` reorders together with the cache rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hindsight.lm.base import DecodeState, LanguageModel
from hindsight.lm.sampling import sample_from_logprobs
from hindsight.potentials.base import Potential
from hindsight.twists.base import Twist


@dataclass
class Particles:
    """``N`` partial completions and their weights. ``log_w`` accumulates since the last resampling."""

    state: DecodeState
    log_w: torch.Tensor  # [N] float64
    prev: torch.Tensor  # [N] float64: log psi_{t-1}(s_<t) of each particle (0 without a twist)
    live: torch.Tensor  # [N] bool: still generating
    lengths: torch.Tensor  # [N] long: completion tokens so far
    log_phi: torch.Tensor  # [N] float64: set on the step a particle ends

    @classmethod
    def start(cls, lm: LanguageModel, prompt_ids: Sequence[int], n: int) -> Particles:
        """Prefill the prompt once and fan it out to ``n`` particles of weight 1."""
        zeros = torch.zeros(n, dtype=torch.float64)
        return cls(lm.start(prompt_ids, n), zeros, zeros.clone(), torch.ones(n, dtype=torch.bool),
                   torch.zeros(n, dtype=torch.long), zeros.clone())

    @property
    def n(self) -> int:
        return int(self.log_w.shape[0])

    def sequences(self) -> list[list[int]]:
        rows = self.state.tokens.cpu()
        return [rows[i, : self.lengths[i]].tolist() for i in range(self.n)]


@dataclass
class Proposal:
    """One proposed token per particle and what the weights need to know about how it was drawn."""

    tokens: torch.Tensor  # [N] long
    log_norm: torch.Tensor  # [N] float64: log sum_s p(s | s_<t) psi_t(s_<t, s) (0 when q = p)
    log_q: torch.Tensor  # [N] float64: log q of the token
    log_p: torch.Tensor  # [N] float64: log p of the token
    log_psi: torch.Tensor  # [N] float64: log psi_t(s_1..t) (plus the EOS mask), 0 without a twist


def propose(
    lm: LanguageModel,
    p: Particles,
    t: int,
    gen: torch.Generator,
    *,
    twist: Twist | None = None,
    min_tokens: int = 0,
    forced: Sequence[Sequence[int]] = (),
) -> Proposal:
    """Draw one token per particle from ``q(s | s_<t) ∝ p(s | s_<t) · psi_t(s_<t, s)`` (``forced`` rows are
    clamped to their given tokens). EOS is masked out before ``min_tokens``."""
    lp = p.state.logprobs
    logits = lp
    if twist is not None:
        logits = lp + twist.log_psi(p.state).to(device=lm.device, dtype=lp.dtype)
    if t < min_tokens:
        eos = torch.tensor(lm.eos_token_ids, device=lm.device)
        logits = logits.index_fill(1, eos, -math.inf)
    modified = logits is not lp
    norm = torch.logsumexp(logits.double(), dim=-1).cpu() if modified else torch.zeros(p.n, dtype=torch.float64)
    tok = sample_from_logprobs(logits, generator=gen)
    for i, f in enumerate(forced):
        if t < len(f):
            tok[i] = f[t]
    chosen = logits.gather(1, tok[:, None]).squeeze(1).double().cpu()
    chosen_lp = lp.gather(1, tok[:, None]).squeeze(1).double().cpu()
    return Proposal(tok, norm, chosen - norm, chosen_lp, chosen - chosen_lp)


def extend(lm: LanguageModel, p: Particles, prop: Proposal, t: int, max_tokens: int,
           forced: Sequence[Sequence[int]] = ()) -> torch.Tensor:
    """Append the proposed tokens (one forward for all particles); returns which particles end on this step."""
    lm.step(p.state, prop.tokens)
    ending = p.live & (p.state.done.cpu() | (t == max_tokens - 1))
    for i, f in enumerate(forced):
        if p.live[i] and t == len(f) - 1:
            ending[i] = True
            p.state.done[i] = True
    p.lengths += p.live.long()
    return ending


def reweight(lm: LanguageModel, p: Particles, prop: Proposal, ending: torch.Tensor, potential: Potential) -> None:
    """Multiply each running particle's weight by ``sum_s p psi_t / psi_{t-1}``, and by ``phi / psi_t`` on the
    step it ends (the potential is called once, on the particles that end). Ended particles keep weight."""
    inc = prop.log_norm - p.prev
    if bool(ending.any()):
        idx = ending.nonzero().squeeze(1)
        toks = [p.state.tokens[i, : p.lengths[i]].tolist() for i in idx.tolist()]
        p.log_phi[idx] = potential.log_phi([lm.decode(s) for s in toks], toks)
        inc[idx] += p.log_phi[idx] - prop.log_psi[idx]
    inc = torch.where(p.live, inc, torch.zeros_like(inc))
    p.log_w = p.log_w + inc
    p.prev = torch.where(p.live, prop.log_psi, p.prev)
    p.live = p.live & ~ending


def ess(log_w: torch.Tensor) -> float:
    """Effective sample size ``(sum w)^2 / sum w^2`` (0 when every weight is zero)."""
    if not math.isfinite(float(log_w.max())):
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))


def log_mean_weight(log_w: torch.Tensor) -> float:
    """``log mean w``: one resampling epoch's factor of ``log Z-hat``."""
    return float(torch.logsumexp(log_w, 0)) - math.log(log_w.shape[0])


def resample(lm: LanguageModel, p: Particles, ancestors: torch.Tensor) -> Particles:
    """The particles ``ancestors`` names (KV-cache rows gathered, nothing recomputed), with weights reset."""
    n = p.n
    if not torch.equal(ancestors, torch.arange(n)):
        idx = ancestors
        p = Particles(lm.select(p.state, idx.to(lm.device)), p.log_w, p.prev[idx], p.live[idx], p.lengths[idx],
                      p.log_phi[idx])
    p.log_w = torch.zeros(n, dtype=torch.float64)
    return p


class TraceRecorder:
    """Per step, each particle's last hidden state, token, ``log p`` and ``log q`` of that token and whether it
    was still running: what twist training needs (only meaningful without resampling)."""

    KEYS = ("hidden", "tokens", "logp", "logq", "alive")

    def __init__(self) -> None:
        self.rows: dict[str, list[torch.Tensor]] = {k: [] for k in self.KEYS}

    def record(self, p: Particles, prop: Proposal) -> None:
        """Call after :func:`propose` and before :func:`extend` (the hidden state the token was drawn from)."""
        self.rows["hidden"].append(p.state.hidden.detach().float().cpu().clone())
        self.rows["tokens"].append(prop.tokens.cpu().clone())
        self.rows["logp"].append(prop.log_p)
        self.rows["logq"].append(prop.log_q)
        self.rows["alive"].append(p.live.clone())

    def result(self, log_phi: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {k: torch.stack(v, dim=1) for k, v in self.rows.items()}  # [N, steps, ...]
        out["log_phi"] = log_phi
        return out
