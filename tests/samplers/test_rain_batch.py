"""Batched RAIN: B searches advanced together give, prompt by prompt, what each gives alone with the same seed."""

import json
from dataclasses import replace

import pytest
import torch

from hindsight.lm import ragged
from hindsight.potentials.self_eval import HARMLESS, PotentialEvaluator, SelfEvaluator
from hindsight.samplers.rain import Rain, RainConfig, rain

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
