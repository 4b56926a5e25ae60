import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.lm.sampling import sample_from_logprobs, warp


def test_seeded_generate_is_reproducible(tiny):
    a = tiny.generate("hi there", n=4, max_tokens=12, seed=7)
    b = tiny.generate("hi there", n=4, max_tokens=12, seed=7)
    c = tiny.generate("hi there", n=4, max_tokens=12, seed=8)
    assert [s.tokens for s in a] == [s.tokens for s in b]
    assert [s.tokens for s in a] != [s.tokens for s in c]


def test_temperature_zero_is_greedy(tiny):
    prompt = tiny.chat("hi there")
    out = tiny.generate(prompt, n=2, max_tokens=8, temperature=0)
    ids = list(prompt)
    for _ in range(len(out[0].tokens)):
        nxt = int(tiny.next_logprobs([ids])[0].argmax())
        ids.append(nxt)
        if nxt in tiny.eos_token_ids:
            break
    assert out[0].tokens == ids[len(prompt):]
    assert out[0].tokens == out[1].tokens


def test_sample_logprob_is_model_logprob(tiny):
    prompt = tiny.chat("abc")
    for s in tiny.generate(prompt, n=3, max_tokens=6, seed=1, temperature=0.7, top_k=5):
        ref = float(tiny.score([prompt], [s.tokens])[0].sum())
        assert s.logprob == pytest.approx(ref, abs=1e-4)


def test_eos_and_length_finish(toy):
    out = toy.generate([0, 1], n=64, max_tokens=3, seed=0)
    eos = toy.eos_token_ids[0]
    for s in out:
        assert 1 <= len(s.tokens) <= 3
        if s.finish_reason == "eos":
            assert s.tokens[-1] == eos and eos not in s.tokens[:-1]
        else:
            assert s.finish_reason == "length" and len(s.tokens) == 3 and eos not in s.tokens
    assert {s.finish_reason for s in out} == {"eos", "length"}


def test_generate_matches_the_exact_distribution(toy):
    """Sample frequencies of every completion agree with enumeration (chi-square, fixed seed)."""
    from hindsight.lm.toy import enumerate_sequences

    seqs, logp = enumerate_sequences(toy, [0, 1], 2)
    n = 4000
    counts = {s: 0 for s in seqs}
    for s in toy.generate([0, 1], n=n, max_tokens=2, seed=3):
        counts[tuple(s.tokens)] += 1
    expected = logp.exp() * n
    obs = torch.tensor([counts[s] for s in seqs], dtype=torch.float64)
    keep = expected > 5
    chi2 = float((((obs - expected) ** 2) / expected)[keep].sum())
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 4 * (2 * dof) ** 0.5  # far inside the tail for this many degrees of freedom


def test_stop_strings(tiny):
    out = tiny.generate("hi", n=8, max_tokens=30, seed=2, stop=["e"])
    for s in out:
        assert "e" not in s.text
        if s.finish_reason == "stop":
            assert "e" in tiny.decode(s.tokens)


def test_warp_top_k_and_top_p():
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = warp(lp, top_k=2).exp()
    assert torch.allclose(k2, torch.tensor([[0.625, 0.375, 0.0, 0.0]]), atol=1e-6)
    p = warp(lp, top_p=0.8).exp()  # 0.5 + 0.3 reaches 0.8: keep two
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]), atol=1e-6)
    t = warp(lp, temperature=0.5).exp()
    assert torch.allclose(t, (lp * 2).softmax(-1), atol=1e-6)


def test_sampling_frequencies():
    lp = torch.log(torch.tensor([0.6, 0.3, 0.1])).expand(20000, 3)
    g = torch.Generator().manual_seed(0)
    freq = torch.bincount(sample_from_logprobs(lp, generator=g), minlength=3).double() / 20000
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64), atol=0.015)


def test_sampling_never_returns_a_token_of_probability_zero():
    # zero-probability tokens at the start, between and at the end of the support, over a large vocabulary
    lp = torch.full((4000, 5000), float("-inf"))
    lp[:, [7, 8, 2500, 4998]] = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    g = torch.Generator().manual_seed(1)
    tok = sample_from_logprobs(lp, generator=g)
    counts = torch.bincount(tok, minlength=5000).double() / 4000
    assert set(tok.unique().tolist()) == {7, 8, 2500, 4998}
    assert torch.allclose(counts[[7, 8, 2500, 4998]], torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64),
                          atol=0.03)


def test_sampling_draws_one_uniform_per_row():
    # the seed decides each row from one draw: the same generator state gives the same tokens for any vocabulary
    # size, and row i does not depend on the rows after it
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    lp = torch.log_softmax(torch.randn(6, 300), -1)
    a = sample_from_logprobs(lp, generator=g1)
    b = sample_from_logprobs(lp[:3], generator=g2)
    assert torch.equal(a[:3], b)


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(max_tokens=0), dict(temperature=-1), dict(top_p=0),
                                    dict(top_k=-2)])
def test_bad_sampling_settings(tiny, kwargs):
    with pytest.raises(HindsightError):
        tiny.generate("hi", **{"n": 1, "max_tokens": 4, **kwargs})


def test_prompt_errors(tiny):
    with pytest.raises(HindsightError, match="empty"):
        tiny.generate("   ")
    with pytest.raises(HindsightError, match="context"):
        tiny.generate("a" * 300, max_tokens=4)
