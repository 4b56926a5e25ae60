"""Self-evaluation values from option-token probabilities (stub model), order-swap symmetry, caching."""

import functools
import math
from dataclasses import replace

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.lm.base import DecodeState, LanguageModel
from hindsight.potentials.self_eval import HARMLESS, PotentialEvaluator, SelfEvaluator
from hindsight.potentials.text import Keywords, Regex
from hindsight.testing import EvaluatorContract


class StubLM(LanguageModel):
    """Characters are tokens. After 'Answer: (' it puts logit ``bias + signal`` on 'A' and 0 on 'B', where
    ``signal`` is +s when the option shown as (A) is the right one for the reply ('kind' replies are harmless).
    """

    name = "stub"
    vocab_size = 256
    max_length = 100_000
    eos_token_ids = [0]
    pad_token_id = 0
    device = torch.device("cpu")

    def __init__(self, bias: float, s: float = 2.0):
        super().__init__()
        self.bias, self.s, self.calls = bias, s, 0

    def encode(self, text):
        return [ord(c) % 256 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)

    def chat(self, messages, add_generation_prompt=True):
        return self.encode(str(messages))

    def start(self, prompt_ids, n=1):
        return DecodeState(list(prompt_ids), torch.zeros((n, 0), dtype=torch.long), torch.zeros(n, dtype=torch.bool),
                           torch.zeros((n, 256)), torch.zeros((n, 1)), None)

    def select(self, state, rows):
        rows = list(rows)
        return DecodeState(state.prompt_ids, state.tokens[rows], state.done[rows], state.logprobs[rows],
                           state.hidden[rows], None)

    def extend(self, state, tokens):
        state.tokens = torch.cat([state.tokens, torch.as_tensor(tokens)], dim=1)
        return torch.zeros(tokens.shape)

    def step(self, state, tokens):
        raise NotImplementedError

    def score(self, *a, **k):
        raise NotImplementedError

    def next_logprobs(self, contexts, *, prefix=None, batch_size=None):
        self.calls += 1
        head = self.decode(prefix.prompt_ids + prefix.tokens[0].tolist()) if prefix is not None else ""
        out = torch.full((len(contexts), 256), -30.0)
        for i, c in enumerate(contexts):
            text = head + self.decode(c)
            example = text.rsplit("User:", 1)[-1]
            reply_good = "kind" in example
            a_is_good = example.rsplit("(A) ", 1)[-1].startswith("harmless")
            signal = self.s if reply_good == a_is_good else -self.s
            out[i, ord("A")] = self.bias + signal
            out[i, ord("B")] = 0.0
        return torch.log_softmax(out, -1)


def sig(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("bias", [0.0, 1.5, -3.0])
def test_soft_value_from_option_probabilities(bias):
    ev = SelfEvaluator(StubLM(bias), "harmless", value_rule="soft")
    v = ev.values("help me", ["be kind to them", "hit them hard"]).tolist()
    # good option first: p(A) = sig(bias + s); good second: p(B) = 1 - sig(bias - s)
    p_kind = (sig(bias + 2) + 1 - sig(bias - 2)) / 2
    p_mean = (sig(bias - 2) + 1 - sig(bias + 2)) / 2
    assert v == pytest.approx([2 * p_kind - 1, 2 * p_mean - 1], abs=1e-6)
    probs = ev.order_probs("help me", ["be kind to them"])
    assert probs[0].tolist() == pytest.approx([sig(bias + 2), 1 - sig(bias - 2)], abs=1e-6)


@pytest.mark.parametrize("rule", ["soft", "vote"])
def test_order_swap_cancels_letter_bias(rule):
    """A bias towards letter A and the same bias towards B give the same value: the two orders cancel it."""
    a = SelfEvaluator(StubLM(2.5), "harmless", value_rule=rule).values("q", ["so kind", "awful"])
    b = SelfEvaluator(StubLM(-2.5), "harmless", value_rule=rule).values("q", ["so kind", "awful"])
    assert torch.allclose(a, b, atol=1e-9)
    blind = SelfEvaluator(StubLM(2.5, s=0.0), "harmless", value_rule=rule).values("q", ["so kind", "awful"])
    assert torch.allclose(blind, torch.zeros(2, dtype=torch.float64), atol=1e-9)  # pure position bias -> 0


@pytest.mark.parametrize("bias, s, expect", [
    (0.0, 2.0, [1.0, -1.0]),  # both orders agree with the signal: +1 for the kind reply, -1 for the other
    (0.0, 0.1, [1.0, -1.0]),  # a faint signal still wins both votes (soft would give ~±0.05)
    (3.0, 2.0, [0.0, 0.0]),  # the letter bias beats the signal: A wins in both orders, so the votes split
    (-3.0, 2.0, [0.0, 0.0]),  # ... and the same towards B
    (1.0, 2.0, [1.0, -1.0]),  # a bias smaller than the signal changes nothing
])
def test_hard_vote_value_per_option_order(bias, s, expect):
    ev = SelfEvaluator(StubLM(bias, s=s), "harmless")  # vote is the default (the reference rule)
    assert ev.value_rule == "vote" and ev.name == "self-eval:harmless"
    assert ev.values("help me", ["be kind to them", "hit them hard"]).tolist() == expect
    soft = SelfEvaluator(StubLM(bias, s=s), "harmless", value_rule="soft").values("help me", ["be kind to them"])
    assert abs(float(soft[0])) < 1  # the soft value is never decisive


def test_hard_vote_takes_the_letter_probabilities_of_each_order():
    """One order votes for the good option, the other against: value 0; both for: 1; both against: -1."""
    ev = SelfEvaluator(StubLM(0.0), "harmless")
    ev.order_probs = lambda prompt, responses: torch.tensor([[0.6, 0.4], [0.51, 0.9], [0.2, 0.5]],
                                                            dtype=torch.float64)
    assert ev.values("q", ["a", "b", "c"]).tolist() == [0.0, 1.0, -1.0]  # p = 0.5 is a tie: votes against


def test_unknown_value_rule_is_an_error():
    with pytest.raises(HindsightError):
        SelfEvaluator(StubLM(0.0), "harmless", value_rule="majority")


def test_memoised_per_text_and_one_call_per_batch():
    lm = StubLM(0.5)
    ev = SelfEvaluator(lm, "harmless")
    ev.values("q", ["kind words", "rude words", "kind words"])
    assert lm.calls == 1
    ev.values("q", ["rude words", "kind words"])
    assert lm.calls == 1


def chars_model(context: int = 1024):
    """A random tiny Llama over all printable characters (so prompt templates tokenise without unknowns)."""
    import string

    from hindsight.lm.hf import HFLanguageModel
    from hindsight.lm.toy import _llama, char_tokenizer

    symbols = list(string.ascii_letters + string.digits + string.punctuation + " \n")
    model = _llama(len(symbols) + 1, hidden=32, layers=2, heads=4, kv_heads=2, context=context, seed=0, init=0.3)
    return HFLanguageModel(model, char_tokenizer(symbols), name="chars", device="cpu")


def test_shared_head_caching_matches_single_evaluation():
    """Batches share a cached prefix of the reply text; values must equal one-at-a-time evaluation."""
    tiny = chars_model()
    prompt = replace(HARMLESS, instruction="Judge.\n", examples=HARMLESS.examples[:2])
    replies = ["well it is nice, and fine", "well it is nice, but bad", "well it is not"]
    batched = SelfEvaluator(tiny, prompt=prompt).order_probs("say hi", replies)
    single = torch.cat([SelfEvaluator(tiny, prompt=prompt).order_probs("say hi", [r]) for r in replies])
    assert torch.allclose(batched, single, atol=1e-4)


def test_hinted_committed_prefix_matches_plain_evaluation():
    """One text at a time after a hinted committed response: cached head, same probabilities as without it."""
    tiny = chars_model()
    prompt = replace(HARMLESS, instruction="Judge.\n", examples=HARMLESS.examples[:2])
    hinted = SelfEvaluator(tiny, prompt=prompt)
    hinted.hint_prefix("say hi", "well it is nice")
    plain = SelfEvaluator(tiny, prompt=prompt)
    for r in ["well it is nice, and fine", "well it is nice, but bad", "well it is nicer"]:
        assert torch.allclose(hinted.order_probs("say hi", [r]), plain.order_probs("say hi", [r]), atol=1e-4)
    assert ("say hi", "well it is") in hinted._states  # the hint's head was cached ...
    assert not any(h for (_, h) in plain._states)  # ... and nothing but the prompt without it


def test_same_letter_token_is_an_error(tiny):
    with pytest.raises(HindsightError):
        SelfEvaluator(tiny, "harmless")  # 'A' and 'B' are both unknown (one id) for the tiny tokenizer


def test_potential_evaluator_maps_phi_to_value():
    ev = PotentialEvaluator(Regex("yes"))
    assert ev.values("q", ["yes please", "no"]).tolist() == [1.0, -1.0]
    kw = PotentialEvaluator(Keywords(["ok"], weight=-math.log(2)))  # phi = 0.5 ** count
    assert kw.values("q", ["ok", "ok ok", "none"]).tolist() == pytest.approx([0.0, -0.5, 1.0])


# ---- the shipped evaluator contract (hindsight.testing) ---------------------------------------------------------
REPLIES = ["so kind of you", "awful words", "well it is nice"]


class TestPotentialEvaluatorContract(EvaluatorContract):
    def make(self):
        return PotentialEvaluator(Regex("kind", penalty=0.25))

    def inputs(self):
        return "be nice", REPLIES


class TestSelfEvaluatorContract(EvaluatorContract):
    def make(self):
        return SelfEvaluator(StubLM(0.5), "harmless", value_rule="soft")

    def inputs(self):
        return "be nice", REPLIES


class TestSelfEvaluatorOnAModelContract(EvaluatorContract):
    """A real (random, tiny) model: batched scoring with a shared cached head must equal one at a time."""

    def make(self):
        prompt = replace(HARMLESS, instruction="Judge.\n", examples=HARMLESS.examples[:1])
        return SelfEvaluator(_chars(), prompt=prompt, value_rule="soft")

    def inputs(self):
        return "say hi", ["well it is nice, and fine", "well it is nice, but bad"]


@functools.cache
def _chars():
    return chars_model()
