"""The multi-prompt batch is exact against one prompt at a time: rows join at different steps, leave early."""

from __future__ import annotations

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.lm.batch import BatchDecoder, ThreadCounters, per_thread_counters
from hindsight.lm.toy import tiny_model


@pytest.fixture(scope="module")
def lm():
    return tiny_model()


def _alone(lm, prompt, tokens):
    """Per-token log-probs of ``tokens`` after ``prompt``, and the distribution after the last one."""
    state = lm.start(prompt)
    lps = []
    for t in tokens:
        lps.append(float(state.logprobs[0, t]))
        lm.step(state, torch.tensor([t]))
    return lps, state.logprobs[0].clone()


def test_rows_joining_and_leaving_match_single_prompt_decoding(lm):
    prompts = [lm.encode("hello there, how are you?"), lm.encode("hi"), lm.encode("a much longer prompt than the rest")]
    gen = torch.Generator().manual_seed(0)
    plans = [torch.randint(0, lm.vocab_size - 1, (n,), generator=gen).tolist() for n in (9, 4, 6)]
    joins = [0, 2, 3]  # the step at which each prompt joins
    bd = BatchDecoder(lm)
    rows: dict[int, int] = {}
    got: dict[int, list[float]] = {0: [], 1: [], 2: []}
    final: dict[int, torch.Tensor] = {}
    for t in range(12):
        joining = [i for i, j in enumerate(joins) if j == t]
        if joining:
            for i, ids in zip(joining, bd.add([prompts[i] for i in joining])):
                rows[i] = ids[0]
        live = [i for i in rows if len(got[i]) < len(plans[i])]
        finished = [i for i in rows if len(got[i]) == len(plans[i]) and i not in final]
        for i in finished:
            final[i] = bd.rows_logprobs([rows[i]])[0].clone()
        bd.drop([rows[i] for i in finished])
        if not live:
            continue
        order = {r: k for k, r in enumerate(bd.ids)}
        lp = bd.logprobs
        toks = [0] * bd.size
        for i in live:
            tok = plans[i][len(got[i])]
            got[i].append(float(lp[order[rows[i]], tok]))
            toks[order[rows[i]]] = tok
        bd.step(toks)
    assert bd.size == 0 and bd.mask.shape == (0, 0)
    for i in range(3):
        want, want_last = _alone(lm, prompts[i], plans[i])
        assert got[i] == pytest.approx(want, abs=1e-4)
        assert torch.allclose(final[i], want_last, atol=1e-4)


def test_copies_share_a_prefill_and_dropping_trims_padding(lm):
    bd = BatchDecoder(lm)
    short, long_ = lm.encode("ab"), lm.encode("a long one here")
    (a, b), (c,) = bd.add([short, long_], copies=[2, 1])
    assert bd.ids == [a, b, c] and bd.mask.shape == (3, len(long_))
    assert torch.equal(bd.rows_logprobs([a]), bd.rows_logprobs([b]))
    bd.drop([c])
    assert bd.mask.shape == (2, len(short))  # the long prompt's padding columns are gone
    bd.step([1, 2])
    _, want = _alone(lm, short, [2])
    assert torch.allclose(bd.rows_logprobs([b])[0], want, atol=1e-4)


def test_bad_input_is_one_sentence(lm):
    bd = BatchDecoder(lm)
    with pytest.raises(HindsightError, match="empty"):
        bd.add([[]])
    bd.add([lm.encode("ab")])
    with pytest.raises(HindsightError, match="1 rows"):
        bd.step([1, 2])


def test_counters_are_per_thread(lm):
    import threading

    per_thread_counters(lm)
    assert isinstance(lm.counters, ThreadCounters)
    before = lm.counters.forward_passes
    lm.start(lm.encode("ab"))
    seen = []
    th = threading.Thread(target=lambda: seen.append(lm.counters.forward_passes))
    th.start()
    th.join()
    assert lm.counters.forward_passes == before + 1 and seen == [0]
