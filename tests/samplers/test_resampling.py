import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.samplers.resampling import SCHEMES, get_scheme
from tests.toy_task import one_thread  # noqa: F401

W = torch.tensor([0.05, 0.4, 0.0, 0.15, 0.3, 0.1], dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_expected_offspring_is_n_times_weight(name):
    scheme = get_scheme(name)
    gen = torch.Generator().manual_seed(0)
    n, reps = W.shape[0], 4000
    counts = torch.zeros(n, dtype=torch.float64)
    for _ in range(reps):
        idx = scheme(W, gen)
        assert idx.shape == (n,) and torch.all(idx[1:] >= idx[:-1])  # sorted ancestor indices
        counts += torch.bincount(idx, minlength=n).double()
    mean = counts / reps
    # multinomial counts have sd sqrt(N w (1 - w)) <= 0.8 per draw; 4000 draws: se <= 0.013
    assert torch.allclose(mean, n * W, atol=0.06), (name, mean, n * W)
    assert mean[2] == 0  # a zero-weight particle is never picked


@pytest.mark.parametrize("name", ["systematic", "residual", "stratified"])
def test_low_variance_schemes_stay_near_n_w(name):
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        c = torch.bincount(get_scheme(name)(W, gen), minlength=W.shape[0]).double()
        nw = W.shape[0] * W
        if name == "residual":  # at least floor(N w) copies, the rest drawn at random
            assert torch.all(c >= torch.floor(nw))
        else:  # systematic: floor(N w) or ceil(N w) copies; stratified: within 2
            assert torch.all((c - nw).abs() < (1 if name == "systematic" else 2))


def test_unknown_scheme_is_one_sentence():
    with pytest.raises(HindsightError, match="resampling scheme"):
        get_scheme("bogus")
