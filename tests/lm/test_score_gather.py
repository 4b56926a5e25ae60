"""lm.score against a naive computation from full logits (the gathering of positions is vectorised)."""

import pytest
import torch


def _naive(lm, ctx, cont):
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    return torch.stack([lp[len(ctx) + t - 1, cont[t]] for t in range(len(cont))])


@pytest.mark.parametrize("side", ["left", "right"])
def test_score_matches_full_logits(tiny, side):
    ctxs = [tiny.encode("hello there"), tiny.encode("a"), tiny.encode("why is the sky blue?")]
    conts = [tiny.encode(" general"), tiny.encode("bc d"), []]
    got = tiny.score(ctxs, conts, padding_side=side)
    for c, k, g in zip(ctxs, conts, got):
        assert g.shape == (len(k),)
        if k:
            assert torch.allclose(g, _naive(tiny, c, k), atol=1e-4)


def test_score_after_a_prefix_matches_full_sequence(tiny):
    pre = tiny.encode("once upon a time")
    state = tiny.start(pre, 1)
    ctxs, conts = [[], tiny.encode(" the")], [tiny.encode(" cat"), tiny.encode(" end.")]
    got = tiny.score(ctxs, conts, prefix=state)
    for c, k, g in zip(ctxs, conts, got):
        assert torch.allclose(g, _naive(tiny, pre + c, k), atol=1e-4)
