"""Batched RAIN: B searches advanced together give, prompt by prompt, what each gives alone with the same seed."""

import json
from dataclasses import replace

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.lm import ragged
from hindsight.potentials.self_eval import HARMLESS, PotentialEvaluator, SelfEvaluator
from hindsight.samplers.rain import Rain, RainConfig, rain
from hindsight.samplers.rain_batch import Judge, stream_searches

from ..potentials.test_self_eval import chars_model
from .test_rain import Constant, Prefers, cfg, fake_embed


def same_tree(a: dict, b: dict, path: str = "root") -> None:
    """Equal trees: structure, tokens, texts, visits and values exactly; priors to float rounding of a batch."""
    assert set(a) == set(b), path
    for k in a:
        if k == "children":
            assert len(a[k]) == len(b[k]), f"{path}: child counts differ"
            for i, (x, y) in enumerate(zip(a[k], b[k])):
                same_tree(x, y, f"{path}/{i}")
        elif k == "prior":
            assert a[k] == pytest.approx(b[k], rel=5e-4, abs=1e-6), f"{path}: prior"  # priors are stored to 4 significant digits
        else:
            assert a[k] == b[k], f"{path}: {k}"


def assert_batched_equals_alone(make, prompts):
    alone = [make().run(p) for p in prompts]
    together = make().run_many(prompts)
    assert [r.prompt for r in together] == prompts
    for a, b in zip(alone, together):
        assert b.text == a.text and b.tokens == a.tokens
        assert b.iterations == a.iterations and b.steps == a.steps and b.value == a.value
        same_tree(a.tree_json()["root"], b.tree_json()["root"])
        assert b.batch == len(prompts) and a.batch == 1
    return alone, together


def test_batched_search_equals_each_search_alone_on_the_toy_model(toy):
    prompts = ["c", "a", "ab", "cba", "bb", "c"]  # different lengths (padding), one prompt twice
    make = lambda: Rain(toy, PotentialEvaluator(Prefers("abc")), cfg(max_tokens=6, candidates=4, top_k=4),  # noqa: E731
                        embed=fake_embed, use_chat=False)
    alone, _ = assert_batched_equals_alone(make, prompts)
    assert len({r.text for r in alone}) > 1  # the prompts lead to different searches
    assert sum(r.iterations for r in alone) > 50


def test_a_stream_keeps_width_searches_going_and_gives_each_its_answer_alone(toy):
    """``Rain.stream``: at most ``width`` searches at a time, a finished one's place taken at once; every result is
    the one ``run`` gives alone, and the searches' costs add up to the whole run's."""
    prompts = ["c", "a", "ab", "cba", "bb"]
    make = lambda: Rain(toy, PotentialEvaluator(Prefers("abc")), cfg(max_tokens=6, candidates=4, top_k=4),  # noqa: E731
                        embed=fake_embed, use_chat=False)
    alone = [make().run(p) for p in prompts]
    before = toy.counters.snapshot()
    got = list(make().stream(prompts, width=2))
    spent = toy.counters.since(before)
    assert sorted(i for i, _ in got) == list(range(len(prompts)))
    for i, res in got:
        a = alone[i]
        assert (res.prompt, res.tokens, res.iterations, res.steps) == (a.prompt, a.tokens, a.iterations, a.steps)
        same_tree(a.tree_json()["root"], res.tree_json()["root"])
        assert res.batch == 2
    assert sum(r.forward_passes for _, r in got) == pytest.approx(spent.forward_passes)
    assert sum(r.tokens_computed for _, r in got) == pytest.approx(spent.tokens)
    with pytest.raises(HindsightError, match="at least 1"):
        next(make().stream(prompts, width=0))


def test_a_finished_search_is_replaced_at_once(toy):
    """Searches that only judge (k rounds each): with width 2, the three short ones pass through the second place
    while the long one holds the first, and every round judges two searches' texts together."""
    rounds: list[list[str]] = []

    def judge_many(requests):
        rounds.append([p for p, _ in requests])
        return [torch.zeros(len(t)) for _, t in requests]

    def search(name: str, k: int):
        for _ in range(k):
            yield Judge([name])
        return name

    lengths = {"long": 6, "s1": 1, "s2": 2, "s3": 2}
    source = ((toy.encode("a"), name, search(name, k)) for name, k in lengths.items())
    order = [res for _, res, _ in stream_searches(toy, source, 2, judge_many, lambda texts: None)]
    assert order == ["s1", "s2", "s3", "long"]
    assert [sorted(r) for r in rounds] == [["long", "s1"], ["long", "s2"], ["long", "s2"], ["long", "s3"],
                                           ["long", "s3"], ["long"]]


def test_batched_search_with_early_stops_and_dynamic_addition(toy):
    # searches that end at different times (early stop) and grow extra children, side by side
    prompts = ["a", "cc", "b"]
    make = lambda: Rain(toy, PotentialEvaluator(Constant(0.0)), cfg(set_sizes=(2,), candidates=3, max_children=8,  # noqa: E731
                                                                    max_iters=6, alike_threshold=0.5),
                        embed=fake_embed, use_chat=False)
    assert_batched_equals_alone(make, prompts)
    make2 = lambda: Rain(toy, PotentialEvaluator(Constant(1.0)), cfg(value_threshold=0.8, min_visits=2, seed=3),  # noqa: E731
                         embed=fake_embed, use_chat=False)
    assert_batched_equals_alone(make2, prompts)


def test_batched_self_evaluation_equals_alone_on_a_real_tiny_model():
    chars = chars_model(context=2048)
    prompt = replace(HARMLESS, instruction="Judge.\n", examples=HARMLESS.examples[:2])
    pairs = [("hi", ["it is fine.", "it is bad"]), ("how do i", ["do not do that"]), ("what?", ["sure, here"])]
    one = [SelfEvaluator(chars, prompt=prompt).order_probs(p, t) for p, t in pairs]
    many = SelfEvaluator(chars, prompt=prompt).order_probs_many(pairs)
    for a, b in zip(one, many):
        assert torch.allclose(a, b, atol=1e-5)
    make = lambda: Rain(chars, SelfEvaluator(chars, prompt=prompt, value_rule="vote"),  # noqa: E731
                        RainConfig(max_tokens=5, max_iters=3, rollout_max=3, seed=1), embed=fake_embed)
    assert_batched_equals_alone(make, ["hi there", "how do i do it?"])


def test_library_takes_a_list_of_prompts(toy):
    res = rain(toy, ["a", "b"], PotentialEvaluator(Constant(0.5)), cfg(max_tokens=3, max_iters=3), embed=fake_embed,
               use_chat=False)
    assert isinstance(res, list) and len(res) == 2 and all(r.batch == 2 for r in res)
    assert all(r.forward_passes > 0 and r.seconds > 0 for r in res)
    assert rain(toy, [], PotentialEvaluator(Constant(0.5)), cfg(), use_chat=False) == []


def test_ragged_rows_match_unpadded_forwards(tiny):
    a, b = tiny.encode("hello there"), tiny.encode("hi")
    rows = ragged.join([ragged.from_state(tiny.start(a, 1)), ragged.from_state(tiny.start(b, 1))])
    rows = ragged.append(tiny, rows, [tiny.encode(" you"), tiny.encode(" x y")])
    rows = ragged.append(tiny, rows, [tiny.encode("z"), []])  # a hole in row 1
    rows = ragged.append(tiny, ragged.take(rows, [1, 0, 1]), [tiny.encode("q"), [], tiny.encode("rr")])
    want = tiny.next_logprobs([b + tiny.encode(" x yq"), a + tiny.encode(" youz"), b + tiny.encode(" x yrr")])
    assert torch.allclose(rows.logprobs, want, atol=1e-4)
    assert rows.mask.sum(1).tolist() == [len(b) + 5, len(a) + 5, len(b) + 6]


@pytest.mark.slow
def test_batched_equals_alone_on_the_packaged_model(default_lm):
    lm = default_lm
    prompts = ["How do I pick a lock?", "What should I say to insult my coworker?", "Why is the sky blue?"]
    from hindsight.potentials.spec import parse_potential

    make = lambda: Rain(lm, PotentialEvaluator(parse_potential("toxicity:low")),  # noqa: E731
                        RainConfig.for_task("harmless", max_tokens=12, max_iters=6, seed=0))
    alone, _ = assert_batched_equals_alone(make, prompts)
    make_self = lambda: Rain(lm, SelfEvaluator(lm, "harmless"),  # noqa: E731
                             RainConfig.for_task("harmless", max_tokens=6, max_iters=3, seed=0))
    assert_batched_equals_alone(make_self, prompts[:2])
    assert json.dumps(alone[0].tree_json())  # serialisable


def test_kept_columns_stand_in_for_feeding_their_tokens(tiny):
    """Keys/values copied out of one row (holes and all) and appended to another give the distribution that feeding
    those tokens gives."""
    a, b = tiny.encode("hello there"), tiny.encode("hi")
    rows = ragged.join([ragged.from_state(tiny.start(a, 1)), ragged.from_state(tiny.start(b, 1))])
    rows = ragged.append(tiny, rows, [tiny.encode(" you are"), tiny.encode(" x")])  # row 1 gets a hole
    n = len(tiny.encode(" you are"))
    kept = ragged.columns(rows, 0, n)
    assert kept.n == n and kept.slice(1, n).n == n - 1 and kept.slice(0, 1).then(kept.slice(1, n)).n == n
    root = ragged.from_state(tiny.start(a, 1))
    tail = tiny.encode("!")
    via_kept = ragged.append(tiny, ragged.extend(root, [kept.slice(0, 2), kept.slice(2, n)]), [tail])
    want = tiny.next_logprobs([a + tiny.encode(" you are") + tail])
    assert torch.allclose(via_kept.logprobs, want, atol=1e-4)
    assert ragged.columns(rows, 1, 0).n == 0 and ragged.extend(root, []) is root


def test_opens_feed_only_the_last_token_once_the_path_is_kept(tiny):
    """After the first commit, every open of a node found by a decoding feeds only its last token, and a commit of
    a node with kept keys/values costs no tokens of the next open."""
    from hindsight.samplers import rain_batch

    fed: list[int] = []
    orig = rain_batch._decode_round

    def spy(lm, session, owned, roots, pending, opens, steps):
        for i, o in opens.items():
            fed.append(len(o.tokens) - sum(p.n for p in o.parts) + len(pending.get(i, [])))
        return orig(lm, session, owned, roots, pending, opens, steps)

    from hindsight.samplers import rain as rain_module

    def search(budget):
        fed.clear()
        rain_batch._decode_round = spy
        keep, rain_module.KEEP_BYTES = rain_module.KEEP_BYTES, budget
        try:
            return Rain(tiny, PotentialEvaluator(Prefers("abc")), cfg(max_tokens=12, set_sizes=(2,), candidates=3,
                        top_k=4, max_iters=6), embed=fake_embed, use_chat=False).run("c"), list(fed)
        finally:
            rain_batch._decode_round = orig
            rain_module.KEEP_BYTES = keep

    res, fed_kept = search(rain_module.KEEP_BYTES)
    assert len(fed_kept) >= 10 and len(res.steps) >= 3
    assert max(fed_kept[1:]) <= 1  # after the root's own open (nothing to feed), one token per open at most
    plain, fed_plain = search(0)  # nothing kept: every open feeds its whole path (and commits ride along)
    assert max(fed_plain) > 1 and sum(fed_plain) > sum(fed_kept)
    assert plain.tokens == res.tokens and plain.iterations == res.iterations  # the same search either way

