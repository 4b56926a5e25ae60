"""Reverse generation: Ba reverses exactly what Ba scoring expects; Fo conditions exactly like Fo scoring."""

from __future__ import annotations

import pytest

from hindsight.errors import HindsightError
from hindsight.reverse.generation import BA_TEMPLATE, FO_TEMPLATE, ReverseGenerator, make_reverse_generator
from hindsight.reverse.scorers import make_scorer

RESPONSE = "the cat sat on the mat."


def _eos_logprob(lm, context: list[int]) -> float:
    return float(lm.next_logprobs([context])[0, lm.eos_token_ids[0]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ba_generation_reverses_sampled_ids_and_matches_ba_scoring(tiny, seed):
    gen = make_reverse_generator(tiny, reverse_lm=tiny, max_tokens=12, temperature=1.0)
    (q,) = gen.generate(RESPONSE, 1, seed=seed)
    prompt = tiny.encode(RESPONSE)[::-1]
    assert gen.prompt_ids(RESPONSE) == prompt
    # what the reverse model actually sampled, in sampling order, is the query's tokens last-to-first
    (raw,) = tiny.generate(prompt, n=1, max_tokens=12, temperature=1.0, seed=seed)
    body = [t for t in raw.tokens if t not in tiny.eos_token_ids]
    assert q.tokens == body[::-1]
    assert q.text == tiny.decode(q.tokens)
    if not q.tokens:
        pytest.skip("the tiny model ended at once for this seed")
    # the TRLM-Ba scorer sees exactly these ids: log P(rev(query) | rev(response))
    ctx, tgt = make_scorer("trlm-ba", tiny, reverse_lm=tiny).encode_pair(q.text, RESPONSE)
    assert ctx == prompt and tgt == body
    score = float(make_scorer("trlm-ba", tiny, reverse_lm=tiny).score([q.text], [RESPONSE]).total[0])
    expected = q.logprob - (_eos_logprob(tiny, prompt + body) if q.finish_reason == "eos" else 0.0)
    assert score == pytest.approx(expected, abs=1e-4)


def test_ba_greedy_equals_argmax_of_reversed_scoring(tiny):
    gen = ReverseGenerator(tiny, BA_TEMPLATE, max_tokens=6, temperature=0.0)
    (q,) = gen.generate(RESPONSE, 1)
    prompt = tiny.encode(RESPONSE)[::-1]
    seq = list(prompt)
    for tok in q.tokens[::-1]:  # each sampled id is the argmax after the reversed prefix so far
        assert int(tiny.next_logprobs([seq])[0].argmax()) == tok
        seq.append(tok)


def test_fo_generation_conditions_like_fo_scoring(tiny):
    gen = make_reverse_generator(tiny, max_tokens=8, temperature=0.0, stop=())
    ctx, _ = make_scorer("trlm-fo", tiny, task="answer").encode_pair("x", RESPONSE)
    assert gen.prompt_ids(RESPONSE) == ctx
    queries = gen.generate(RESPONSE, 3)
    assert len(queries) == 3 and len({tuple(q.tokens) for q in queries}) == 1  # greedy: identical rows
    q = queries[0]
    lp = tiny.score([ctx], [q.tokens])[0].double().sum()
    eos = _eos_logprob(tiny, ctx + q.tokens) if q.finish_reason == "eos" else 0.0
    assert q.logprob == pytest.approx(float(lp) + eos, abs=1e-4)
    assert q.text == tiny.decode(q.tokens).strip()


def test_fo_generation_cuts_at_stop_and_prefix():
    class FakeLM:
        eos_token_ids = [0]

        def decode(self, ids):
            return " what is two plus two?\nanswer: four"

    gen = ReverseGenerator.__new__(ReverseGenerator)
    gen.lm, gen.template, gen.stop = FakeLM(), FO_TEMPLATE, ("\n",)
    assert gen._query([5, 6], -1.0, "stop").text == "what is two plus two?"


def test_bad_inputs(tiny):
    gen = make_reverse_generator(tiny)
    with pytest.raises(HindsightError):
        gen.generate("   ", 2)
    with pytest.raises(HindsightError):
        gen.generate(RESPONSE, 0)
    with pytest.raises(HindsightError):
        make_reverse_generator(tiny, reverse_lm=tiny, template=FO_TEMPLATE)
