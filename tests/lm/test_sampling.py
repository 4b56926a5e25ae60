"""Top-k sampling without the whole-vocabulary CDF: the same draws as warping to top-k and inverting the CDF."""

import torch

from hindsight.lm.sampling import sample_from_logprobs, sample_next, sample_top_k, warp


def test_top_k_draws_equal_the_warped_general_path():
    differ = total = 0
    for trial in range(120):
        n, k = 1 + trial % 7, [1, 2, 5, 15][trial % 4]
        lp = torch.log_softmax(torch.randn(n, 500, generator=torch.Generator().manual_seed(trial)) * (1 + trial % 4), -1)
        a = sample_from_logprobs(warp(lp, top_k=k), generator=torch.Generator().manual_seed(trial))
        b = sample_top_k(lp, k, generator=torch.Generator().manual_seed(trial))
        c = sample_next(lp, top_k=k, generator=torch.Generator().manual_seed(trial))
        assert torch.equal(b, c)
        differ += int((a != b).sum())
        total += n
    assert differ == 0 and total > 400


def test_top_k_keeps_ties_and_never_draws_outside_the_top():
    lp = torch.log_softmax(torch.tensor([[0.0, 3.0, 3.0, 3.0, 1.0, -2.0]]), -1)  # three tied for the top two
    g = torch.Generator().manual_seed(0)
    seen = {int(sample_top_k(lp, 2, generator=g)[0]) for _ in range(200)}
    assert seen == {1, 2, 3}  # like warp: every token tied with the k-th stays possible
    lp = torch.log_softmax(torch.randn(3, 50, generator=torch.Generator().manual_seed(1)), -1)
    top = torch.topk(lp, 4).indices
    for _ in range(100):
        tok = sample_top_k(lp, 4, generator=g)
        assert all(int(t) in top[r].tolist() for r, t in enumerate(tok))
    # the frequencies follow the renormalised top-k probabilities
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    counts = torch.bincount(torch.cat([sample_top_k(lp, 2, generator=g) for _ in range(4000)]), minlength=4)
    assert counts[2:].sum() == 0 and abs(counts[0] / 4000 - 0.625) < 0.03
