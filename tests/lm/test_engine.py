"""The decoding engine against the plain definition: a full forward over the whole sequence."""

import pytest
import torch

from hindsight.errors import HindsightError

CTX = ["hello there", "a", "the quick brown fox jumps", "why?"]
CONT = [" world", "bc, de", "!", " because it can."]


def enc(lm, texts):
    return [lm.encode(t) for t in texts]


def full_logprobs(lm, ids):
    """Reference: the next-token distribution from one unbatched, uncached forward."""
    return lm.next_logprobs([ids], batch_size=1)[0]


@pytest.mark.parametrize("side", ["left", "right"])
def test_score_batched_equals_single(tiny, side):
    ctx, cont = enc(tiny, CTX), enc(tiny, CONT)
    single = [tiny.score([c], [k])[0] for c, k in zip(ctx, cont)]
    batched = tiny.score(ctx, cont, padding_side=side, batch_size=len(ctx))
    for b, s, k in zip(batched, single, cont):
        assert b.shape == (len(k),)
        assert torch.allclose(b, s, atol=1e-4)


def test_score_matches_manual_chain_rule(tiny):
    ctx, cont = tiny.encode("abc"), tiny.encode("de")
    lp = tiny.score([ctx], [cont])[0]
    first = full_logprobs(tiny, ctx)[cont[0]]
    second = full_logprobs(tiny, ctx + cont[:1])[cont[1]]
    assert torch.allclose(lp, torch.stack([first, second]), atol=1e-5)


def test_score_with_prefix_equals_full_context(tiny):
    pre_ids = tiny.encode("prefix text: ")
    pre = tiny.start(pre_ids, 1)
    ctx, cont = enc(tiny, CTX), enc(tiny, CONT)
    with_prefix = tiny.score(ctx, cont, prefix=pre)
    plain = tiny.score([pre_ids + c for c in ctx], cont)
    for a, b in zip(with_prefix, plain):
        assert torch.allclose(a, b, atol=1e-4)
    # an empty context right after the prefix reads the prefix's own next-token distribution
    empty = tiny.score([[]], [cont[0]], prefix=pre)[0]
    assert torch.allclose(empty, tiny.score([pre_ids], [cont[0]])[0], atol=1e-4)
    nl = tiny.next_logprobs(ctx, prefix=pre)
    assert torch.allclose(nl, tiny.next_logprobs([pre_ids + c for c in ctx]), atol=1e-4)


def test_step_after_start_equals_full_forward(tiny):
    prompt = tiny.encode("once upon")
    state = tiny.start(prompt, 3)
    assert torch.allclose(state.logprobs[0], full_logprobs(tiny, prompt), atol=1e-5)
    toks = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10], [3, 3, 3, 3]])
    for j in range(toks.shape[1]):
        tiny.step(state, toks[:, j])
    assert state.tokens.tolist() == toks.tolist()
    assert state.length == len(prompt) + 4
    for i in range(3):
        ref = full_logprobs(tiny, prompt + toks[i].tolist())
        assert torch.allclose(state.logprobs[i], ref, atol=1e-4)
    assert state.hidden.shape == (3, tiny.hidden_size)


def test_select_then_step_equals_recomputing(tiny):
    prompt = tiny.encode("abc")
    state = tiny.start(prompt, 3)
    toks = torch.tensor([[1, 2], [3, 4], [5, 6]])
    for j in range(2):
        tiny.step(state, toks[:, j])
    chosen = tiny.select(state, [2, 0, 0, 1])
    tiny.step(chosen, torch.tensor([7, 8, 9, 10]))
    rows = [2, 0, 0, 1]
    for i, (r, t) in enumerate(zip(rows, [7, 8, 9, 10])):
        ref = full_logprobs(tiny, prompt + toks[r].tolist() + [t])
        assert torch.allclose(chosen.logprobs[i], ref, atol=1e-4)
    # the original state is untouched and still usable
    assert state.n == 3 and state.tokens.shape == (3, 2)
    tiny.step(state, torch.tensor([1, 1, 1]))
    assert torch.allclose(state.logprobs[1], full_logprobs(tiny, prompt + toks[1].tolist() + [1]), atol=1e-4)


def test_extend_equals_score_and_steps(tiny):
    prompt = tiny.encode("the ")
    toks = torch.tensor([[5, 6, 7], [8, 9, 10]])
    state = tiny.start(prompt, 2)
    token_lp = tiny.extend(state, toks)
    ref = tiny.score([prompt, prompt], toks.tolist())
    assert torch.allclose(token_lp, torch.stack(ref), atol=1e-4)
    for i in range(2):
        assert torch.allclose(state.logprobs[i], full_logprobs(tiny, prompt + toks[i].tolist()), atol=1e-4)


def test_rows_end_at_different_lengths(toy):
    eos = toy.eos_token_ids[0]
    state = toy.start([0, 1], 2)
    toy.step(state, torch.tensor([eos, 0]))
    assert state.done.tolist() == [True, False]
    toy.step(state, torch.tensor([1, 2]))  # row 0 is finished: its token is replaced by filler
    assert state.tokens[0, 1].item() == toy.pad_token_id
    assert torch.allclose(state.logprobs[1], full_logprobs(toy, [0, 1, 0, 2]), atol=1e-5)


def test_engine_errors(tiny):
    with pytest.raises(HindsightError):
        tiny.start([], 1)
    with pytest.raises(HindsightError):
        tiny.start([1, 2], 0)
    state = tiny.start([1, 2], 2)
    with pytest.raises(HindsightError):
        tiny.select(state, [0, 2])
    with pytest.raises(HindsightError):
        tiny.step(state, torch.tensor([1, 2, 3]))
    with pytest.raises(HindsightError):
        tiny.score([[1]], [[2], [3]])
    with pytest.raises(HindsightError):
        tiny.score([[]], [[2]])
    with pytest.raises(HindsightError):
        tiny.score([[1] * 300], [[2]])
    with pytest.raises(HindsightError):
        tiny.token_id("ab")
    assert tiny.token_id("a") == tiny.encode("a")[0]


def test_counters_count_forward_passes(tiny):
    before = tiny.counters.snapshot()
    state = tiny.start(tiny.encode("abc"), 4)
    for _ in range(3):
        tiny.step(state, torch.tensor([1, 2, 3, 4]))
    used = tiny.counters.since(before)
    assert used.forward_passes == 4
    assert used.tokens == 3 + 3 * 4
