"""Sequential Monte Carlo towards ``sigma(x) ∝ p(x | prompt) · phi(x)``: bootstrap, twisted and conditional.

One short loop over the steps of :mod:`hindsight.samplers.particles` serves every variant. ``N`` particles
share the prompt's KV cache (``lm.start``); each step proposes one token per particle from
``q(s | s_<t) ∝ p(s | s_<t) · psi_t(s_<t, s)`` (``psi = 1`` without a twist, so ``q = p``: bootstrap SMC),
multiplies the particle's weight by the incremental weight

    log w_t = log sum_s p(s | s_<t) psi_t(s_<t, s) - log psi_{t-1}(s_<t)

and, on the step where the particle ends (EOS or ``max_tokens``), by ``phi(x) / psi_t(x)`` so that the final
target is ``p · phi``. The product of the incremental weights telescopes to ``p(x) phi(x) / q(x)``. A particle
that has ended rides along with incremental weight 1. When ESS/N falls below ``ess_threshold`` the particles
are resampled (KV-cache rows are gathered, nothing is recomputed) and ``log Z-hat`` accumulates
``log mean w``. ``ess_threshold=0`` never resamples: importance sampling (best-of-N with weights).

``forced`` clamps the first rows to given completions: with one forced row and resampling that keeps row 0's
own ancestor, this is conditional SMC, whose ``E[log Z-hat]`` is an upper bound on ``log Z`` when the forced
completion is an exact sample from ``sigma`` (the other particles are then resampled multinomially, whatever
``resample`` says: that is the conditional scheme the bound is proved for). Forcing every row without
resampling evaluates ``log w(x)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hindsight.errors import HindsightError
from hindsight.infra import seeded_generator
from hindsight.lm.base import Counters, LanguageModel
from hindsight.potentials.base import Potential
from hindsight.samplers.particles import (Particles, TraceRecorder, ess, extend, log_mean_weight, propose,
                                          resample as resample_particles, reweight)
from hindsight.samplers.resampling import Scheme, get_scheme
from hindsight.twists.base import Twist


@dataclass
class SMCResult:
    """What one SMC run produced. ``weights`` are the final normalised weights (sum to one)."""

    sequences: list[list[int]]  # completion token ids (ending with EOS when the particle stopped there)
    texts: list[str]
    log_weights: torch.Tensor  # [N] float64, unnormalised, accumulated since the last resampling
    weights: torch.Tensor  # [N] float64, normalised
    log_phi: torch.Tensor  # [N] float64
    log_z: float  # sum over resampling epochs of log mean w
    ess: list[float]  # effective sample size at every step, before any resampling
    resampled: list[bool]
    ancestry: torch.Tensor  # [steps, N]: ancestor index each particle took at each step (identity if none)
    counters: Counters
    seconds: float
    trace: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "log_z": self.log_z,
            "ess": [round(e, 4) for e in self.ess],
            "resampled_steps": [t for t, r in enumerate(self.resampled) if r],
            "samples": [
                {"text": t, "weight": float(w), "log_weight": float(lw), "log_phi": float(lp), "tokens": s}
                for t, w, lw, lp, s in zip(self.texts, self.weights, self.log_weights, self.log_phi, self.sequences)
            ],
            "cost": self.counters.as_dict(),
            "seconds": round(self.seconds, 4),
        }


def _check(n_particles: int, max_tokens: int, ess_threshold: float, min_tokens: int,
           forced: list[list[int]], trace: bool) -> None:
    if n_particles < 1:
        raise HindsightError(f"n_particles must be at least 1 (got {n_particles}).")
    if max_tokens < 1:
        raise HindsightError(f"max_tokens must be at least 1 (got {max_tokens}).")
    if not 0 <= ess_threshold <= 1:
        raise HindsightError(f"ess_threshold must be in [0, 1] (got {ess_threshold}).")
    if not 0 <= min_tokens <= max_tokens:
        raise HindsightError(f"min_tokens must be in [0, max_tokens] (got {min_tokens}).")
    if len(forced) > n_particles:
        raise HindsightError("More forced completions than particles.")
    if len(forced) > 1 and ess_threshold > 0:
        raise HindsightError("Several forced rows only make sense without resampling (ess_threshold=0).")
    if any(not f or len(f) > max_tokens for f in forced):
        raise HindsightError(f"A forced completion must have 1 to {max_tokens} tokens.")
    if trace and ess_threshold > 0:
        raise HindsightError("trace=True needs ess_threshold=0 (no resampling).")


def ancestors(log_w: torch.Tensor, scheme: Scheme, gen: torch.Generator, conditional: bool) -> torch.Tensor:
    """Ancestor indices for one resampling. ``conditional``: particle 0 (the clamped one) keeps its own history
    and the others are drawn iid (multinomial), the conditional-SMC scheme whose bound is proved."""
    w = torch.softmax(log_w, 0)
    if not conditional:
        return scheme(w, gen)
    n = w.shape[0]
    others = torch.multinomial(w, n - 1, replacement=True, generator=gen) if n > 1 else torch.zeros(0).long()
    return torch.cat([torch.zeros(1, dtype=torch.long), others])


def run_smc(
    lm: LanguageModel,
    prompt_ids: Sequence[int],
    potential: Potential,
    n_particles: int,
    max_tokens: int,
    *,
    twist: Twist | None = None,
    resample: str = "systematic",
    ess_threshold: float = 0.5,
    seed: int | None = None,
    forced: Sequence[Sequence[int]] | None = None,
    min_tokens: int = 0,
    trace: bool = False,
) -> SMCResult:
    """Run SMC (see the module docstring). ``min_tokens`` restricts the target to completions of at least that
    many tokens (EOS is masked out of the proposal before then and the weights account for it).

    ``trace=True`` (only without resampling) records, per step, each particle's last hidden state, token,
    ``log p`` and ``log q`` of that token and whether it was still running: what twist training needs.
    """
    forced = [[int(t) for t in f] for f in (forced or [])]
    _check(n_particles, max_tokens, ess_threshold, min_tokens, forced, trace)
    scheme = get_scheme(resample)
    prompt_ids = [int(i) for i in prompt_ids]
    lm.check_length(len(prompt_ids), max_tokens)
    gen = seeded_generator(seed)
    t0, before = time.perf_counter(), lm.counters.snapshot()
    n = n_particles
    p = Particles.start(lm, prompt_ids, n)
    log_z, ess_hist, resampled, ancestry = 0.0, [], [], []
    recorder = TraceRecorder() if trace else None
    for t in range(max_tokens):
        prop = propose(lm, p, t, gen, twist=twist, min_tokens=min_tokens, forced=forced)
        if recorder:
            recorder.record(p, prop)
        ending = extend(lm, p, prop, t, max_tokens, forced)
        reweight(lm, p, prop, ending, potential)
        ess_hist.append(ess(p.log_w))
        last = t == max_tokens - 1 or not bool(p.live.any())
        due = not last and ess_threshold > 0 and (ess_threshold >= 1 or ess_hist[-1] < ess_threshold * n)
        now = due and math.isfinite(float(p.log_w.max()))
        idx = ancestors(p.log_w, scheme, gen, conditional=bool(forced)) if now else torch.arange(n)
        if now:
            log_z += log_mean_weight(p.log_w)
            p = resample_particles(lm, p, idx)
        ancestry.append(idx)
        resampled.append(now)
        if last:
            break
    log_z += log_mean_weight(p.log_w)
    return _result(lm, p, log_z, ess_hist, resampled, ancestry, lm.counters.since(before),
                   time.perf_counter() - t0, recorder)


def _result(lm: LanguageModel, p: Particles, log_z: float, ess_hist: list[float], resampled: list[bool],
            ancestry: list[torch.Tensor], counters: Counters, seconds: float, recorder: TraceRecorder | None
            ) -> SMCResult:
    n = p.n
    finite = math.isfinite(float(p.log_w.max()))
    weights = torch.softmax(p.log_w, 0) if finite else torch.full((n,), 1.0 / n, dtype=torch.float64)
    sequences = p.sequences()
    return SMCResult(
        sequences=sequences,
        texts=[lm.decode(s) for s in sequences],
        log_weights=p.log_w,
        weights=weights,
        log_phi=p.log_phi,
        log_z=log_z,
        ess=ess_hist,
        resampled=resampled,
        ancestry=torch.stack(ancestry),
        counters=counters,
        seconds=seconds,
        trace=recorder.result(p.log_phi) if recorder else None,
    )


def bootstrap_smc(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, n_particles: int,
                  max_tokens: int, **kw: Any) -> SMCResult:
    """Proposal = the model, weight = phi at the end (N=1 without resampling: plain sampling)."""
    return run_smc(lm, prompt_ids, potential, n_particles, max_tokens, twist=None, **kw)


def twisted_smc(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, twist: Twist,
                n_particles: int, max_tokens: int, **kw: Any) -> SMCResult:
    """Proposal ∝ p · psi_t over the whole vocabulary; weights telescope to p · phi / q."""
    return run_smc(lm, prompt_ids, potential, n_particles, max_tokens, twist=twist, **kw)


def importance_sampling(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, n_particles: int,
                        max_tokens: int, **kw: Any) -> SMCResult:
    """SMC without resampling: ``N`` independent proposals weighted by ``p · phi / q`` (best-of-N with weights)."""
    kw["ess_threshold"] = 0.0
    return run_smc(lm, prompt_ids, potential, n_particles, max_tokens, **kw)


def conditional_smc(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, reference: Sequence[int],
                    n_particles: int, max_tokens: int, **kw: Any) -> SMCResult:
    """SMC with particle 0 clamped to ``reference`` (an exact sample from sigma gives an upper bound)."""
    return run_smc(lm, prompt_ids, potential, n_particles, max_tokens, forced=[reference], **kw)


def trace_drawer(lm: LanguageModel, prompt_ids: Sequence[int], potential: Potential, max_tokens: int, *,
                 min_tokens: int = 0, buffer: int = 0, chunk: int = 256):
    """The ``draw`` function twist training needs: traced completions from the current (twisted) proposal.

    ``buffer > 0``: model-proposal batches (``twist=None``) do not depend on the twist being trained, so only
    ``buffer`` distinct batches are drawn and then replayed (head-only gradient steps, no LM cost). More than
    ``chunk`` completions are drawn ``chunk`` at a time (bounded memory) and concatenated.
    """
    cache: dict[int, dict[str, torch.Tensor]] = {}

    def draw(twist: Twist | None, n: int, seed: int) -> dict[str, torch.Tensor]:
        key = seed % buffer if buffer and twist is None else None
        if key is not None and key in cache:
            return cache[key]
        parts = [run_smc(lm, prompt_ids, potential, min(chunk, n - start), max_tokens, twist=twist,
                         ess_threshold=0.0, seed=seed + j * 1_000_003, min_tokens=min_tokens, trace=True).trace
                 for j, start in enumerate(range(0, n, chunk))]
        trace = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if key is not None:
            cache[key] = trace
        return trace

    return draw
