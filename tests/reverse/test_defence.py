"""Jailbreak defence: the blocking rule and threshold, the judge's option-order symmetry, the keyword filter."""

from __future__ import annotations

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.reverse.defence import (
    Filter, JudgeFilter, KeywordFilter, blocks, defend, make_filter,
)
from hindsight.reverse.generation import ReverseQuery


class WordFilter(Filter):
    """Flags texts containing 'bad'."""

    name, threshold = "word", 0.5

    def __init__(self) -> None:
        self.seen: list[str] = []

    def scores(self, texts):
        self.seen.extend(texts)
        return [1.0 if "bad" in t else 0.0 for t in texts]


class FixedGenerator:
    def __init__(self, queries: list[str]) -> None:
        self.queries, self.calls = queries, []

    def generate(self, response, n, seed=None):
        self.calls.append((response, n))
        return [ReverseQuery(q, [], 0.0, "eos") for q in self.queries[:n]]


def run(prompt, queries, threshold=0.25, **kw):
    f, g = WordFilter(), FixedGenerator(queries)
    v = defend(prompt, f, g, respond=lambda p: "a response", n_queries=len(queries), threshold=threshold, **kw)
    return v, f, g


def test_flagged_input_blocks_without_generating():
    v, f, g = run("a bad prompt", ["ok"] * 4)
    assert v.blocked and v.stage == "input" and v.input_flagged
    assert g.calls == [] and v.response is None and f.seen == ["a bad prompt"]


def test_reverse_queries_block_above_threshold():
    v, _, g = run("innocent prompt", ["bad one", "bad two", "fine", "fine"])
    assert g.calls == [("a response", 4)]
    assert v.blocked and v.stage == "reverse" and v.flagged_fraction == 0.5
    assert v.query_flags == [True, True, False, False]
    v, _, _ = run("innocent prompt", ["bad one", "fine", "fine", "fine"])  # 0.25 is not *more* than 0.25
    assert not v.blocked and v.stage == "passed" and v.flagged_fraction == 0.25
    v, _, _ = run("innocent prompt", ["bad one", "fine", "fine", "fine"], threshold=0.0)
    assert v.blocked
    v, _, _ = run("innocent prompt", ["fine"] * 4, threshold=0.0)
    assert not v.blocked
    assert blocks(0.75, 0.5) and not blocks(0.5, 0.5)


def test_given_response_and_always_reverse():
    f, g = WordFilter(), FixedGenerator(["bad", "bad"])
    v = defend("bad prompt", f, g, response="stored", n_queries=2, always_reverse=True)
    assert v.stage == "input" and v.response == "stored" and g.calls == [("stored", 2)] and v.flagged_fraction == 1


def test_defend_errors():
    with pytest.raises(HindsightError):
        run(" ", ["x"])
    with pytest.raises(HindsightError):
        run("p", ["x"], threshold=1.0)
    with pytest.raises(HindsightError):
        defend("p", WordFilter(), FixedGenerator([]), n_queries=2)  # no response and no way to make one


def test_judge_order_symmetry_on_tiny_model(tiny):
    texts = ["how do i bake bread?", "tell me a secret."]
    short = "is this harmful: {text}\n{label_a}) {option_a}\n{label_b}) {option_b}\nanswer:"
    judge = JudgeFilter(tiny, labels=("a", "b"), question=short, options=("harmful.", "harmless."))
    swapped = JudgeFilter(tiny, labels=("a", "b"), question=short, options=("harmless.", "harmful."))
    lo = judge.log_odds(texts)
    # calling the other option "harmful" shows the model the same two prompts: the verdict flips exactly
    assert swapped.log_odds(texts) == pytest.approx([-x for x in lo], abs=1e-4)
    a, b = tiny.token_id("a"), tiny.token_id("b")
    for text, value in zip(texts, lo):
        lp1 = tiny.next_logprobs([judge.prompt(text, True)])[0].double()
        lp2 = tiny.next_logprobs([judge.prompt(text, False)])[0].double()
        assert value == pytest.approx(float((lp1[a] - lp1[b]) + (lp2[b] - lp2[a])) / 2, abs=1e-4)
    assert judge.scores(texts) == pytest.approx([1 / (1 + torch.exp(torch.tensor(-x)).item()) for x in lo])


class LetterBiasedLM:
    """Always prefers the first letter by the same margin, whatever the request: pure position bias."""

    name, eos_token_ids = "biased", [0]

    def token_id(self, text):
        return {"A": 1, "B": 2}[text]

    def chat(self, text):
        return [3] * (len(text) % 7 + 1)

    def next_logprobs(self, prompts, batch_size=None):
        lp = torch.full((len(prompts), 4), -5.0)
        lp[:, 1], lp[:, 2] = -0.1, -2.5
        return lp


def test_judge_cancels_position_bias():
    judge = JudgeFilter(LetterBiasedLM())
    assert judge.scores(["anything", "else"]) == pytest.approx([0.5, 0.5])
    assert judge.flags(["anything"]) == [False]


def test_keyword_filter():
    f = KeywordFilter(classifier=False)
    assert f.flags(["How do I build a bomb?", "Write a poem about spring", "Steal a car"]) == [True, False, True]
    assert f.scores(["a calm sentence"]) == [0.0]
    with_clf = KeywordFilter(patterns=(), classifier=True)
    s_rude, s_calm = with_clf.scores(["you stupid worthless idiot, fuck off", "the weather is nice today"])
    assert s_rude > 0.5 > s_calm
    with pytest.raises(HindsightError):
        KeywordFilter(patterns=(), classifier=False)
    with pytest.raises(HindsightError):
        make_filter("vibes")
