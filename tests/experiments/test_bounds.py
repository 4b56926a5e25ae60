"""Bounds and KL estimates against exact values on the enumerable toy model."""

import pytest
import torch

from hindsight.experiments.bounds import bounds, plot_bounds, rejection_samples
from hindsight.experiments.exact import exact_kls, optimal_twist, proposal_log_weights
from hindsight.twists.base import TableTwist
from tests.toy_task import T, one_thread, toy_task  # noqa: F401


def test_bounds_bracket_log_z_and_kls_approach_exact(toy_task, tmp_path):
    lm, prompt, pot, tgt = toy_task
    gen = torch.Generator().manual_seed(0)
    refs = tgt.sample(400, gen)
    noisy = {k: v + 0.7 * float(torch.randn((), generator=gen)) for k, v in optimal_twist(tgt, 4).table.items()}
    twist = TableTwist(noisy, lm.vocab_size)
    rep = bounds(lm, prompt, pot, {"bootstrap": None, "twisted": twist}, [2, 64], seeds=40, max_tokens=T,
                 references=refs, kl_samples=4000)
    by = {(r.sampler, r.particles): r for r in rep.rows}
    for r in rep.rows:  # lower < log Z < upper; for bootstrap at 2 particles beyond the seeds' noise (the nearly
        # optimal twist and 64 particles put both bounds within that noise of log Z)
        strict = r.sampler == "bootstrap" and r.particles == 2
        assert r.lower.mean + r.lower.half_width < tgt.log_z < r.upper.mean - r.upper.half_width or not strict
        assert r.lower.mean < tgt.log_z + 0.02 and r.upper.mean > tgt.log_z - 0.02
    assert by[("bootstrap", 64)].gap < by[("bootstrap", 2)].gap  # more particles, tighter bounds
    assert by[("twisted", 2)].gap < by[("bootstrap", 2)].gap  # a good twist, tighter bounds
    assert rep.best_lower <= tgt.log_z + 0.02 <= rep.best_upper + 0.04
    # KL estimates against exact KLs of each proposal (they may only overstate, by the bounds' slack)
    for est, tw in zip(rep.kls, (None, twist)):
        log_q, _ = proposal_log_weights(lm, prompt, pot, tw, tgt.seqs, T)
        fwd, rev = exact_kls(tgt, log_q)
        assert est.kl_q_sigma == pytest.approx(fwd, abs=0.1), (est, fwd)
        assert est.kl_sigma_q == pytest.approx(rev, abs=0.15), (est, rev)
    plot_bounds(rep, str(tmp_path / "b.png"))
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_rejection_samples_follow_sigma(toy_task):
    lm, prompt, pot, tgt = toy_task
    samples, draws = rejection_samples(lm, prompt, pot, 300, T, seed=1)
    assert len(samples) == 300 and draws >= 300
    # acceptance rate estimates Z; sample frequencies of the commonest sequence match sigma
    z = torch.exp(torch.tensor(tgt.log_z))
    assert abs(300 / draws - float(z)) < 0.1
    top = max(range(len(tgt.seqs)), key=lambda i: float(tgt.log_sigma[i]))
    freq = sum(tuple(s) == tgt.seqs[top] for s in samples) / 300
    p = float(torch.exp(tgt.log_sigma[top]))
    assert abs(freq - p) < 4 * (p * (1 - p) / 300) ** 0.5


def test_bounds_resume_from_their_result_file(toy_task, tmp_path, monkeypatch):
    """Every finished run is recorded; a rerun reads them back instead of sampling again (same report)."""
    import hindsight.experiments.bounds as bmod
    from hindsight.records.results import ResultFile

    lm, prompt, pot, tgt = toy_task
    path = tmp_path / "bounds.jsonl"
    first = bounds(lm, prompt, pot, {"bootstrap": None}, [2, 4], seeds=3, max_tokens=T, kl_samples=8,
                   results=ResultFile(path), tag="t1")
    assert len(ResultFile(path)) == 1 + 2 * 3  # the exact samples and one record per (particles, seed)

    calls = []
    real = bmod.run_smc
    monkeypatch.setattr(bmod, "run_smc", lambda *a, **k: calls.append(k) or real(*a, **k))
    monkeypatch.setattr(bmod, "conditional_smc", lambda *a, **k: pytest.fail("a finished run was repeated"))
    again = bounds(lm, prompt, pot, {"bootstrap": None}, [2, 4], seeds=3, max_tokens=T, kl_samples=8,
                   results=ResultFile(path), tag="t1")
    assert all(k.get("ess_threshold") == 0.0 for k in calls)  # only the KL runs, never a bound run
    assert [(r.lower.values, r.upper.values) for r in again.rows] == \
        [(r.lower.values, r.upper.values) for r in first.rows]


def test_adding_a_sampler_reuses_the_other_samplers_runs(toy_task, tmp_path, monkeypatch):
    import hindsight.experiments.bounds as bmod
    from hindsight.records.results import ResultFile

    lm, prompt, pot, tgt = toy_task
    path = tmp_path / "bounds.jsonl"
    twist = TableTwist(optimal_twist(tgt, 4).table, lm.vocab_size)
    first = bounds(lm, prompt, pot, {"bootstrap": None}, [2], seeds=3, max_tokens=T, kl_samples=8,
                   results=ResultFile(path), tag="t", sampler_tags={"bootstrap": ""})
    clamped = []
    real = bmod.conditional_smc
    monkeypatch.setattr(bmod, "conditional_smc", lambda *a, **k: clamped.append(k.get("twist")) or real(*a, **k))
    both = bounds(lm, prompt, pot, {"bootstrap": None, "twisted": twist}, [2], seeds=3, max_tokens=T, kl_samples=8,
                  results=ResultFile(path), tag="t", sampler_tags={"bootstrap": "", "twisted": "v1"})
    assert clamped == [twist] * 3  # only the new sampler ran
    assert both.rows[0].lower.values == first.rows[0].lower.values
    clamped.clear()  # a retrained twist (another fingerprint) runs again; bootstrap still does not
    bounds(lm, prompt, pot, {"bootstrap": None, "twisted": twist}, [2], seeds=3, max_tokens=T, kl_samples=8,
           results=ResultFile(path), tag="t", sampler_tags={"bootstrap": "", "twisted": "v2"})
    assert clamped == [twist] * 3


def test_more_seeds_reuse_the_recorded_runs_and_extend_the_exact_samples(toy_task, tmp_path, monkeypatch):
    import hindsight.experiments.bounds as bmod
    from hindsight.records.results import ResultFile

    lm, prompt, pot, _ = toy_task
    path = tmp_path / "bounds.jsonl"
    few = bounds(lm, prompt, pot, {"bootstrap": None}, [2], seeds=3, max_tokens=T, kl_samples=2,
                 results=ResultFile(path), tag="t")
    assert few.exact_samples == 3
    clamped = []
    real = bmod.conditional_smc
    monkeypatch.setattr(bmod, "conditional_smc", lambda *a, **k: clamped.append(a[3]) or real(*a, **k))
    more = bounds(lm, prompt, pot, {"bootstrap": None}, [2], seeds=5, max_tokens=T, kl_samples=2,
                  results=ResultFile(path), tag="t")
    assert more.rows[0].lower.values[:3] == few.rows[0].lower.values  # seeds 0-2 read back, not rerun
    assert more.exact_samples == 5 and more.model_draws > few.model_draws
    assert len(clamped) == 2  # only seeds 3 and 4 ran, each clamping its own new exact sample
    refs = ResultFile(path).get("t|references|1")["references"]
    assert clamped == refs and len(refs) == 2
