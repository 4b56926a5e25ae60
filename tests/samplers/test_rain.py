"""RAIN end to end on the enumerable toy model: it finds what the value prefers, commits, reuses, reproduces."""

import json
import math

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.lm.toy import enumerate_sequences
from hindsight.potentials.base import Potential
from hindsight.potentials.self_eval import PotentialEvaluator
from hindsight.samplers.rain import Rain, RainConfig, rain
from hindsight.samplers.rain_batch import Open, run_searches


class Prefers(Potential):
    """phi = fraction of the target's characters matched at the start of the text (graded, in [0, 1])."""

    def __init__(self, target: str):
        self.target, self.name = target, f"prefers:{target}"

    def _log_phi(self, texts, tokens):
        out = []
        for t in texts:
            k = 0
            while k < min(len(t), len(self.target)) and t[k] == self.target[k]:
                k += 1
            out.append(math.log(k / len(self.target)) if k else -math.inf)
        return torch.tensor(out, dtype=torch.float64)


class Constant(Potential):
    def __init__(self, phi: float):
        self.phi, self.name = phi, f"const:{phi}"

    def _log_phi(self, texts, tokens):
        return torch.full((len(texts),), math.log(self.phi) if self.phi > 0 else -math.inf, dtype=torch.float64)


def fake_embed(texts):
    """Unit vectors from character counts: similar texts point the same way."""
    v = torch.tensor([[t.count(c) + 0.01 for c in "abc"] for t in texts], dtype=torch.float32)
    return v / v.norm(dim=1, keepdim=True)


PROMPT = "c"


def cfg(**kw):
    base = dict(max_tokens=4, set_sizes=(1, 1, 2), candidates=3, top_k=3, rollout_max=4, max_iters=12,
                min_visits=6, value_threshold=2.0, seed=0)
    base.update(kw)
    return RainConfig(**base)


def run(toy, potential, **kw):
    return Rain(toy, PotentialEvaluator(potential), cfg(**kw), embed=fake_embed, use_chat=False).run(PROMPT)


def unlikely_target(toy):
    """The least likely 3-token completion (no EOS) whose every token has conditional probability >= 20%.

    Each token is then among the candidates an expansion proposes, but the whole is rarely sampled.
    """
    seqs, logp = enumerate_sequences(toy, toy.encode(PROMPT), 3)
    eos = toy.eos_token_ids[0]
    full = [list(s) for s in seqs if len(s) == 3 and eos not in s]
    per_token = toy.score([toy.encode(PROMPT)] * len(full), full)
    ok = [(float(lp.sum()), s) for s, lp in zip(full, per_token) if float(lp.min()) >= math.log(0.2)]
    lp, s = min(ok)
    return toy.decode(s), math.exp(lp)


def test_rain_finds_the_continuation_the_value_prefers(toy):
    target, p = unlikely_target(toy)
    assert p < 0.05  # ancestral sampling says it rarely (exact probability from the enumeration)
    greedy = toy.generate(PROMPT, max_tokens=3, temperature=0, use_chat=False)[0].text
    assert greedy != target
    # breadth like the paper's (10 candidates over this 4-token vocabulary); 10 independent searches
    results = [run(toy, Prefers(target), max_tokens=3, candidates=10, top_k=4, seed=s) for s in range(10)]
    hits = sum(r.text == target for r in results)
    assert hits >= 5  # sampling would expect 10 * p < 0.5 hits
    best = next(r for r in results if r.text == target)
    assert best.value == pytest.approx(1.0)
    assert best.forward_passes > 0 and best.iterations > 0 and best.seconds > 0


class Counting(PotentialEvaluator):
    """Records every call to ``values`` (memoised or not)."""

    def __init__(self, potential):
        super().__init__(potential)
        self.calls = []

    def values_many(self, requests):
        self.calls.extend(list(r) for _, r in requests)
        return super().values_many(requests)


def test_an_iteration_is_one_rollout_one_evaluation_and_unvisited_children(toy):
    ev = Counting(Constant(0.5))
    search = Rain(toy, ev, cfg(set_sizes=(1, 2), candidates=3, top_k=3), embed=fake_embed, use_chat=False)
    s = search.begin(PROMPT)
    root = s.tree
    search.iterate(s)
    assert len(ev.calls) == 1 and len(ev.calls[0]) == 1  # one evaluator call with one text: the rollout
    assert root.n == 1 and len(root.children) == 3
    assert all(ch.n == 0 and ch.w == 0 and ch.embedding is None for ch in root.children)  # no rollouts for them
    assert [len(ch.tokens) for ch in root.children] == [1, 1, 1]
    # set size 1: the three most likely tokens, priors = their probabilities
    top = torch.topk(toy.start(toy.encode(PROMPT), 1).logprobs[0], 3)
    assert [ch.tokens[0] for ch in root.children] == top.indices.tolist()
    assert [ch.prior for ch in root.children] == pytest.approx(top.values.exp().tolist())

    search.iterate(s)  # the unvisited child with the highest prior is the leaf now
    assert len(ev.calls) == 2 and len(ev.calls[1]) == 1
    leaf = root.children[0]
    assert [ch.n for ch in root.children] == [1, 0, 0] and root.n == 2
    assert ev.calls[1][0].startswith(leaf.text)  # judged on the leaf's text + its rollout
    assert leaf.rollout_text == ev.calls[1][0] and leaf.embedding is not None
    assert leaf.children and all(g.n == 0 and len(g.tokens) <= 2 for g in leaf.children)
    assert {len(g.tokens) for g in leaf.children if not g.terminal} <= {2}


def test_rollout_stops_at_a_clause_end_and_sets_have_their_length(toy):
    """With 'b' as the only clause end, a rollout stops at its first 'b', EOS or the cap; sets are k long."""
    search = Rain(toy, Counting(Constant(0.5)), cfg(clause_ends="b", rollout_max=8), embed=fake_embed,
                  use_chat=False)
    s = search.begin(PROMPT)

    def decode(m, k, rollout):  # one decoding from the prompt, on its own
        def gen():
            logp = (yield Open([])).logp
            seqs, lps, _ = yield from search._decode(s, logp, m, k, rollout)
            return seqs, lps
        return run_searches(toy, [toy.encode(PROMPT)], [PROMPT], [gen()], search.evaluator.values_many, search.embed)[0]

    b, eos = toy.token_id("b"), toy.eos_token_ids[0]
    ends = set()
    for _ in range(20):
        seqs, lps = decode(4, 3, True)
        *sets, roll = seqs
        assert len(lps) == 4 and all(len(x) == 3 or x[-1] == eos for x in sets)
        assert all(eos not in x[:-1] for x in sets)
        assert 1 <= len(roll) <= 8 and b not in roll[:-1] and eos not in roll[:-1]
        assert roll[-1] in (b, eos) or len(roll) == 8
        ends.add("b" if roll[-1] == b else "eos" if roll[-1] == eos else "cap")
    assert "b" in ends  # the stop rule did fire
    # the greedy row is the argmax path; set log-probs are the model's (exact scoring agrees)
    seqs, lps = decode(2, 3, False)
    greedy = toy.generate(PROMPT, max_tokens=3, temperature=0, use_chat=False)[0].tokens
    assert seqs[0] == greedy[:len(seqs[0])]
    exact = toy.score([toy.encode(PROMPT)] * 2, seqs)
    assert lps == pytest.approx([float(x.sum()) for x in exact], abs=1e-4)


def test_outer_loop_commits_most_visited_child_and_reuses_its_subtree(toy):
    target, _ = unlikely_target(toy)
    res = run(toy, Prefers(target), max_tokens=3, max_iters=10, extra_iters=3)
    assert len(res.steps) >= 2
    # walk the committed path: each commit is the most visited child (ties by value) of its parent
    node, committed = res.tree, []
    while node.children:
        nxt = [c for c in node.children if id(c) in res.committed]
        if not nxt:
            break
        c = nxt[0]
        assert all((c.n, c.q) >= (s.n, s.q) or c.n > s.n for s in node.children)
        committed.append(c)
        node = c
    assert len(committed) == len(res.steps)
    # reuse: a committed node keeps the visits it had, so the next search only tops it up to max_iters
    for prev, step in zip(res.steps[:-1], res.steps[1:]):
        n0 = prev["visits"]
        if not committed[res.steps.index(prev)].terminal:
            assert step["iterations"] == math.ceil(max(10, n0 + 3) - n0 - 1e-9)
    assert any(s["visits"] > 1 for s in res.steps[:-1])  # there was something to reuse


def test_early_stop_when_best_child_is_good_and_visited(toy):
    res = run(toy, Constant(1.0), value_threshold=0.8, min_visits=2, max_iters=30)
    first = res.steps[0]
    assert first["iterations"] < 30
    assert first["visits"] > 2 and first["value"] > 0.8


def test_dynamic_node_addition_when_children_are_poor_and_alike(toy):
    res = run(toy, Constant(0.0), set_sizes=(4,), candidates=3, max_children=8, max_iters=6, alike_threshold=0.5)
    assert 3 < len(res.tree.children) <= 8
    plain = run(toy, Constant(0.0), set_sizes=(4,), candidates=3, max_children=3, max_iters=6)
    assert len(plain.tree.children) == 3


def test_seed_makes_search_reproducible_and_tree_exports(toy):
    target, _ = unlikely_target(toy)
    a = run(toy, Prefers(target[:2] + "c"), seed=7)
    b = run(toy, Prefers(target[:2] + "c"), seed=7)
    assert a.tokens == b.tokens and a.steps == b.steps
    ja, jb = json.dumps(a.tree_json()), json.dumps(b.tree_json())
    assert ja == jb
    tree = json.loads(ja)["root"]
    assert {"text", "visits", "value", "prior", "children"} <= set(tree)
    count = 0
    stack = [tree]
    while stack:
        n = stack.pop()
        count += bool(n.get("committed"))
        stack.extend(n["children"])
    assert count == len(a.steps) + 1  # the root and every committed node


def test_token_budget_and_result_fields(toy):
    res = rain(toy, PROMPT, PotentialEvaluator(Constant(0.5)), cfg(max_tokens=3, max_iters=3), embed=fake_embed,
               use_chat=False)
    assert 1 <= len(res.tokens) <= 3
    assert res.finish_reason in ("eos", "length")
    d = res.as_dict()
    assert {"text", "iterations", "forward_passes", "tokens_computed", "seconds", "steps"} <= set(d)


def test_bad_settings_are_one_line_errors(toy):
    with pytest.raises(HindsightError):
        RainConfig(max_iters=0).check()
    with pytest.raises(HindsightError):
        RainConfig.for_task("funny")
    assert RainConfig.for_task("truthful").min_visits == 16
    with pytest.raises(HindsightError):
        Rain(toy, PotentialEvaluator(Constant(1.0)), cfg(max_tokens=40), use_chat=False).run(PROMPT)  # > context
