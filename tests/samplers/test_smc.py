"""Exactness of SMC on the enumerable toy model: every estimator is checked against values by enumeration."""

import math

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.experiments.exact import optimal_twist, proposal_log_weights
from hindsight.samplers.smc import bootstrap_smc, importance_sampling, run_smc, twisted_smc
from hindsight.twists.base import TableTwist
from tests.toy_task import T, one_thread, toy_task  # noqa: F401


def test_target_is_far_from_model(toy_task):
    _, _, _, tgt = toy_task
    assert -3.5 < tgt.log_z < -0.5  # neither trivial nor hopeless for a small sampler


@pytest.mark.parametrize("scheme", ["systematic", "multinomial"])
def test_z_hat_is_unbiased(toy_task, scheme):
    lm, prompt, pot, tgt = toy_task
    zs = torch.tensor([math.exp(run_smc(lm, prompt, pot, 4, T, seed=s, resample=scheme, ess_threshold=1.0).log_z)
                       for s in range(200)], dtype=torch.float64)
    se = float(zs.std() / math.sqrt(len(zs)))
    # tolerance: 4 standard errors of the mean over 200 independent runs (a false alarm has p ~ 6e-5)
    assert abs(float(zs.mean()) - math.exp(tgt.log_z)) < 4 * se, (float(zs.mean()), math.exp(tgt.log_z), se)


def test_z_hat_is_unbiased_with_adaptive_resampling_and_twist(toy_task):
    lm, prompt, pot, tgt = toy_task
    gen = torch.Generator().manual_seed(3)
    twist = TableTwist({k: float(v) for k, v in _random_table(lm, tgt, gen).items()}, lm.vocab_size)
    zs = torch.tensor([math.exp(twisted_smc(lm, prompt, pot, twist, 4, T, seed=s, ess_threshold=0.7).log_z)
                       for s in range(200)], dtype=torch.float64)
    se = float(zs.std() / math.sqrt(len(zs)))
    assert abs(float(zs.mean()) - math.exp(tgt.log_z)) < 4 * se


def _random_table(lm, tgt, gen):
    keys = {s[:t] for s in tgt.seqs for t in range(1, len(s) + 1)}
    return {k: float(torch.randn((), generator=gen)) for k in sorted(keys)}


def test_weights_telescope_to_p_phi_over_q(toy_task):
    lm, prompt, pot, tgt = toy_task
    twist = TableTwist(_random_table(lm, tgt, torch.Generator().manual_seed(0)), lm.vocab_size)
    log_q, log_w = proposal_log_weights(lm, prompt, pot, twist, tgt.seqs, T)
    assert abs(float(torch.logsumexp(log_q, 0))) < 1e-5  # the twisted proposal is a normalised distribution
    assert torch.allclose(log_w, tgt.logp + tgt.log_phi - log_q, atol=1e-5)
    assert (log_q - tgt.logp).abs().max() > 0.1  # the twist really changed the proposal


def test_optimal_twist_gives_constant_weights_and_exact_log_z(toy_task):
    lm, prompt, pot, tgt = toy_task
    twist = optimal_twist(tgt, lm.vocab_size)
    for seed in range(3):
        res = twisted_smc(lm, prompt, pot, twist, 8, T, seed=seed, ess_threshold=0.0)
        assert torch.allclose(res.log_weights, torch.full_like(res.log_weights, tgt.log_z), atol=1e-5)
        assert res.log_z == pytest.approx(tgt.log_z, abs=1e-5)
        assert res.ess[-1] == pytest.approx(8.0)


def test_smc_histogram_matches_sigma(toy_task):
    """Chi-square test at a fixed seed: one large SMC run, then draws from its final particles.

    The twist is the optimal one plus noise (so the weights matter), and only ESS/20 draws are taken, so the
    particle system's own error is small next to the draws' noise.
    """
    lm, prompt, pot, tgt = toy_task
    gen = torch.Generator().manual_seed(2)
    noisy = {k: v + 0.5 * float(torch.randn((), generator=gen)) for k, v in optimal_twist(tgt, 4).table.items()}
    res = run_smc(lm, prompt, pot, 20_000, T, twist=TableTwist(noisy, lm.vocab_size), seed=0, ess_threshold=1.0)
    m = int(res.ess[-1] / 20)
    assert m > 500
    picks = torch.multinomial(res.weights, m, replacement=True, generator=torch.Generator().manual_seed(1)).tolist()
    index = {s: i for i, s in enumerate(tgt.seqs)}
    counts = torch.bincount(torch.tensor([index[tuple(res.sequences[i])] for i in picks]), minlength=len(tgt.seqs))
    expected = m * torch.exp(tgt.log_sigma)
    big = expected >= 5  # pool the rare sequences into one bin
    obs = torch.cat([counts[big].double(), counts[~big].sum().double()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    stat = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    p_value = float(torch.special.gammaincc(torch.tensor(dof / 2), torch.tensor(stat / 2)))
    assert p_value > 1e-3, (stat, dof)
    # the same test rejects the model's own distribution: it can fail
    model_exp = m * torch.exp(tgt.logp)
    mexp = torch.cat([model_exp[big], model_exp[~big].sum()[None]])
    assert float(((obs - mexp) ** 2 / mexp).sum()) > 10 * stat


def test_particles_end_at_different_steps_and_ride_along(toy_task):
    lm, prompt, pot, _ = toy_task
    res = bootstrap_smc(lm, prompt, pot, 64, T, seed=0, ess_threshold=0.0)
    lengths = {len(s) for s in res.sequences}
    assert len(lengths) > 1
    for s in res.sequences:
        assert len(s) == T or s[-1] in lm.eos_token_ids
    assert res.weights.sum() == pytest.approx(1.0)
    assert res.ancestry.shape[1] == 64 and not any(res.resampled)
    assert res.counters.forward_passes >= 2


def test_importance_sampling_is_smc_without_resampling(toy_task):
    lm, prompt, pot, tgt = toy_task
    res = importance_sampling(lm, prompt, pot, 16, T, seed=5)
    assert not any(res.resampled)
    # the weights are exactly p phi / q = phi for bootstrap proposals
    assert torch.allclose(res.log_weights, res.log_phi)
    assert res.log_z == pytest.approx(float(torch.logsumexp(res.log_phi, 0)) - math.log(16))


def test_min_tokens_restricts_the_target(toy_task):
    lm, prompt, pot, _ = toy_task
    res = run_smc(lm, prompt, pot, 32, T, seed=0, min_tokens=T, ess_threshold=0.0)
    assert all(len(s) == T for s in res.sequences)


def test_bad_arguments_are_one_sentence(toy_task):
    lm, prompt, pot, _ = toy_task
    with pytest.raises(HindsightError):
        run_smc(lm, prompt, pot, 0, T)
    with pytest.raises(HindsightError):
        run_smc(lm, prompt, pot, 4, T, ess_threshold=2)
    with pytest.raises(HindsightError):
        run_smc(lm, prompt, pot, 4, T, resample="nope")
