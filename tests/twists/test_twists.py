"""Twist heads, CTL and FUDGE on the enumerable toy model (exact KL of the twisted proposal), checkpoints."""

import functools

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.experiments.exact import exact_kls, exact_target, optimal_twist, proposal_log_weights
from hindsight.potentials.text import Regex
from hindsight.samplers.smc import trace_drawer
from hindsight.testing import TwistContract
from hindsight.twists.base import TableTwist
from hindsight.twists.checkpoint import load_twist, save_twist
from hindsight.twists.heads import make_head
from hindsight.twists.train import (Batch, History, TrainConfig, _exact_rows, _head_values, as_batch, ctl_loss,
                                    plot_history, train_twist, vocab_reference)
from tests.toy_task import T, one_thread, toy_task  # noqa: F401


def _kl(lm, prompt, pot, tgt, head):
    log_q, _ = proposal_log_weights(lm, prompt, pot, head, tgt.seqs, T)
    return exact_kls(tgt, log_q)


def _train(lm, prompt, pot, method, steps, seed=0):
    torch.manual_seed(seed)
    head = make_head("mlp", lm.hidden_size, lm.vocab_size, width=32, bounded=method == "fudge")
    cfg = TrainConfig(method=method, steps=steps, batch=128, inner=4, lr=0.03, max_tokens=T,
                      proposal="model" if method == "fudge" else "twist")
    hist = train_twist(head, cfg, trace_drawer(lm, prompt, pot, T), seed=seed)
    return head, hist


def test_untrained_head_is_bootstrap(toy_task):
    lm, prompt, pot, tgt = toy_task
    head = make_head("linear", lm.hidden_size, lm.vocab_size)
    kl_head = _kl(lm, prompt, pot, tgt, head)
    assert kl_head == pytest.approx(exact_kls(tgt, tgt.logp), abs=1e-5)


def test_ctl_moves_the_proposal_towards_sigma(toy_task):
    lm, prompt, pot, tgt = toy_task
    before = exact_kls(tgt, tgt.logp)
    head, hist = _train(lm, prompt, pot, "ctl", 200)
    after = _kl(lm, prompt, pot, tgt, head)
    # both KLs fall (the toy's 16-dim hidden state limits how close a head can get: 0.40 -> 0.28, 1.0 -> 0.24)
    assert after[0] < 0.85 * before[0] and after[1] < 0.5 * before[1], (before, after)
    assert len(hist.loss) == 200
    # on a fixed batch the loss goes down and the optimal twist beats an untrained one
    batch = as_batch(trace_drawer(lm, prompt, pot, T)(None, 256, 99))
    with torch.no_grad():
        untrained = ctl_loss(make_head("mlp", lm.hidden_size, lm.vocab_size, width=32), batch)
    with torch.no_grad():
        assert float(ctl_loss(head, batch)) < float(untrained)


def test_fudge_baseline_also_learns(toy_task):
    lm, prompt, pot, tgt = toy_task
    before = exact_kls(tgt, tgt.logp)
    head, hist = _train(lm, prompt, pot, "fudge", 80)
    after = _kl(lm, prompt, pot, tgt, head)
    # FUDGE fits P(phi | prefix) on model samples: KL(sigma||q) falls clearly (1.0 -> 0.27-0.54 over seeds 0-3);
    # KL(q||sigma) moves either way within 0.1 of its start (0.25-0.45), so the pair is checked by its sum
    assert after[1] < 0.6 * before[1] and sum(after) < 0.8 * sum(before), (before, after)
    assert sum(hist.loss[-10:]) < sum(hist.loss[:10])


def test_optimal_twist_proposal_is_sigma(toy_task):
    lm, prompt, pot, tgt = toy_task
    opt = optimal_twist(tgt, lm.vocab_size)
    log_q, log_w = proposal_log_weights(lm, prompt, pot, opt, tgt.seqs, T)
    assert exact_kls(tgt, log_q)[0] == pytest.approx(0.0, abs=1e-5)


def test_save_load_resume_and_plot(toy_task, tmp_path):
    lm, prompt, pot, tgt = toy_task
    draw = trace_drawer(lm, prompt, pot, T)
    head = make_head("linear", lm.hidden_size, lm.vocab_size)
    cfg = TrainConfig(steps=8, batch=16, inner=4, lr=0.01, max_tokens=T)
    saved = {}

    def on_round(step, opt, hist):
        save_twist(tmp_path / "t.pt", head, {"step": step, "history": hist.as_dict()}, opt.state_dict())
        saved["n"] = step

    hist = train_twist(head, cfg, draw, on_round=on_round)
    assert saved["n"] == 8 and len(hist.loss) == 8
    loaded, meta, opt_state = load_twist(tmp_path / "t.pt")
    state = lm.start(prompt, 3)
    assert torch.equal(loaded.log_psi(state), head.log_psi(state))
    assert meta["step"] == 8 and opt_state is not None
    resumed = train_twist(loaded, TrainConfig(steps=12, batch=16, inner=4, lr=0.01, max_tokens=T), draw,
                          optimizer_state=opt_state, history=History(**meta["history"]))
    assert resumed.steps == list(range(1, 13))
    plot_history(resumed, str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temp files


def test_bad_twist_file_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a twist")
    with pytest.raises(HindsightError, match="twist file"):
        load_twist(bad)
    with pytest.raises(HindsightError, match="does not exist"):
        load_twist(tmp_path / "missing.pt")


@pytest.mark.parametrize("change, match", [
    (lambda b: b.pop("config"), "has no twist configuration"),
    (lambda b: b["config"].pop("vocab_size"), "malformed twist configuration: no 'vocab_size'"),
    (lambda b: b["config"].update(hidden_size="8"), "hidden_size is '8'"),
    (lambda b: b["config"].update(kind="conv"), "Unknown twist head 'conv'"),
    (lambda b: b["config"].update(width=3), "malformed twist configuration .*width"),
    (lambda b: b["config"].update(hidden_size=16), r"out.weight have shape \(5, 8\).*needs \(5, 16\)"),
    (lambda b: b["config"].update(hidden_size=10**9, vocab_size=10**9), "is damaged"),  # allocates nothing
    (lambda b: b["state_dict"].pop("out.bias"), "no weights for out.bias"),
    (lambda b: b["state_dict"].update(extra=torch.zeros(1)), "no place for"),
    (lambda b: b.pop("state_dict"), "holds no twist weights"),
])
def test_twist_file_with_the_right_format_but_wrong_contents_is_one_sentence(tmp_path, change, match):
    """A file that says it is a twist but whose config is missing or whose weights do not fit it."""
    head = make_head("linear", 8, 5)
    blob = {"format": "hindsight-twist-1", "config": head.config(), "state_dict": head.state_dict(), "meta": {},
            "optimizer": None}
    change(blob)
    torch.save(blob, tmp_path / "t.pt")
    with pytest.raises(HindsightError, match=match) as info:
        load_twist(tmp_path / "t.pt")
    assert "\n" not in str(info.value)


def test_twist_for_another_models_sizes_is_refused_and_a_file_without_meta_loads(tmp_path):
    from types import SimpleNamespace

    head = make_head("linear", 8, 5)
    torch.save({"format": "hindsight-twist-1", "config": head.config(), "state_dict": head.state_dict()},
               tmp_path / "t.pt")
    assert load_twist(tmp_path / "t.pt")[1] == {}
    for vocab, hidden in ((7, 8), (5, 16)):
        lm = SimpleNamespace(vocab_size=vocab, hidden_size=hidden, name="other-lm")
        with pytest.raises(HindsightError, match="vocabulary 5, hidden 8.*not other-lm"):
            load_twist(tmp_path / "t.pt", lm=lm)


def test_heads_output_every_token_and_score_chosen_tokens_alike():
    torch.manual_seed(0)
    head = make_head("mlp", 8, 5, width=16)
    torch.nn.init.normal_(head.out.weight)
    h = torch.randn(4, 8)
    full = head(h)
    assert full.shape == (4, 5)
    toks = torch.tensor([0, 3, 4, 1])
    assert torch.allclose(head.log_psi_at(h, toks), full[torch.arange(4), toks], atol=1e-6)
    assert "cond_size" not in head.config() and "condition" not in head.state_dict()
    bounded = make_head("linear", 8, 5, bounded=True)
    assert torch.all(bounded(h) <= 0)  # psi <= 1


def test_twist_file_from_before_the_conditioning_vector_was_removed_still_loads(tmp_path):
    head = make_head("linear", 8, 5)
    torch.nn.init.normal_(head.out.weight)
    blob = {"format": "hindsight-twist-1", "config": {**head.config(), "cond_size": 0},
            "state_dict": {**head.state_dict(), "condition": torch.zeros(0)}, "meta": {}, "optimizer": None}
    torch.save(blob, tmp_path / "old.pt")
    loaded, _, _ = load_twist(tmp_path / "old.pt")
    assert torch.equal(loaded.out.weight, head.out.weight)


def test_replay_buffer_reuses_model_batches_only(toy_task):
    lm, prompt, pot, _ = toy_task
    draw = trace_drawer(lm, prompt, pot, T, buffer=2)
    a, b, a2 = draw(None, 8, 0), draw(None, 8, 1), draw(None, 8, 2)
    assert a2 is a and b is not a  # seed 2 replays buffer slot 0
    head = make_head("linear", lm.hidden_size, lm.vocab_size)
    assert draw(head, 8, 0) is not a  # twisted proposals depend on the head: always fresh


def test_tied_head_scores_tokens_through_their_embeddings():
    torch.manual_seed(0)
    emb = torch.randn(6, 8)
    emb[5] = emb[2]  # token 5 looks exactly like token 2 to the model
    head = make_head("tied", 8, 6, rank=4).bind(emb)
    h = torch.randn(3, 8)
    assert torch.equal(head(h), torch.zeros(3, 6))  # untrained: psi = 1 (bootstrap)
    torch.nn.init.normal_(head.up.weight)
    torch.nn.init.normal_(head.level.weight)
    full = head(h)
    toks = torch.tensor([0, 2, 5])
    assert torch.allclose(head.log_psi_at(h, toks), full[torch.arange(3), toks], atol=1e-5)
    # what is learned about one token carries to a token with the same embedding (a per-token layer cannot)
    assert torch.allclose(full[:, 5], full[:, 2])
    assert not torch.allclose(full[:, 0], full[:, 2])
    flat = make_head("tied", 8, 6, rank=0).bind(emb)  # one token-level direction + a per-state level
    assert sum(p.numel() for p in flat.parameters()) == 8 + 8 + 1
    torch.nn.init.normal_(flat.direction)
    assert torch.allclose(flat(h)[0], emb @ flat.direction) and torch.allclose(flat(h)[0], flat(h)[1])
    with pytest.raises(HindsightError, match="do not fit"):
        head.bind(torch.zeros(7, 8))
    with pytest.raises(HindsightError, match="output embeddings"):
        make_head("tied", 8, 6)(h)


def test_tied_head_trained_on_a_pool_lowers_both_exact_kls(toy_task, tmp_path):
    lm, prompt, pot, tgt = toy_task
    before = exact_kls(tgt, tgt.logp)
    torch.manual_seed(0)
    head = make_head("tied", lm.hidden_size, lm.vocab_size, rank=8).attach(lm)
    calls = []

    def draw(twist, n, seed):
        calls.append((twist, n))
        return trace_drawer(lm, prompt, pot, T)(twist, n, seed)

    cfg = TrainConfig(steps=150, batch=512, inner=50, lr=0.03, max_tokens=T, proposal="pool")
    train_twist(head, cfg, draw, logprobs_from_hidden=lm.logprobs_from_hidden)
    assert calls == [(None, 512)]  # one pool of model samples, drawn once, every step on all of it
    after = _kl(lm, prompt, pot, tgt, head)
    assert after[0] < 0.8 * before[0] and after[1] < 0.5 * before[1], (before, after)
    # the file holds no embeddings; loading needs the model and gives the same twist
    save_twist(tmp_path / "tied.pt", head, {"model": lm.name})
    assert (tmp_path / "tied.pt").stat().st_size < 200_000
    with pytest.raises(HindsightError, match="pass the model"):
        load_twist(tmp_path / "tied.pt")
    loaded = load_twist(tmp_path / "tied.pt", lm=lm)[0]
    state = lm.start(prompt, 2)
    assert torch.equal(loaded.log_psi(state), head.log_psi(state))


def test_trace_drawer_draws_large_batches_in_chunks(toy_task):
    lm, prompt, pot, _ = toy_task
    whole = trace_drawer(lm, prompt, pot, T, chunk=16)(None, 40, 3)
    assert whole["tokens"].shape[:2] == (40, T) and whole["hidden"].shape[:2] == (40, T)
    assert whole["log_phi"].shape == (40,)
    first = trace_drawer(lm, prompt, pot, T, chunk=16)(None, 16, 3)
    assert torch.equal(whole["tokens"][:16], first["tokens"])  # the first chunk is the plain draw
    assert not torch.equal(whole["tokens"][16:32], whole["tokens"][:16])  # later chunks are fresh draws


def test_vocabulary_sum_penalises_psi_on_tokens_the_pool_never_drew(toy_task):
    lm, prompt, pot, _ = toy_task
    draw = trace_drawer(lm, prompt, pot, T)
    for seed in range(50):  # a small pool (fixed seeds) in which one token never occurs
        batch = as_batch(draw(None, 3, seed))
        unseen = sorted(set(range(lm.vocab_size)) - set(batch.tokens[batch.alive].tolist()))
        if unseen:
            break
    u = unseen[0]
    ref = vocab_reference(batch, 64, lm.logprobs_from_hidden)
    assert torch.allclose(ref.logp.exp().sum(-1), torch.ones(ref.logp.shape[:2]), atol=1e-4)
    head = make_head("linear", lm.hidden_size, lm.vocab_size)
    with torch.no_grad():
        base_sampled, base_exact = float(ctl_loss(head, batch)), float(ctl_loss(head, batch, ref))
        head.out.bias[u] = 6.0  # psi = e^6 on a token the pool never drew
        sampled, exact = float(ctl_loss(head, batch)), float(ctl_loss(head, batch, ref))
    assert sampled == pytest.approx(base_sampled, abs=1e-6)  # the sampled-token estimate is blind to it
    assert exact > base_exact + 0.05  # the vocabulary sum sees the mass the twist moved there


def test_holdout_keeps_the_head_with_the_lowest_held_out_loss(toy_task):
    lm, prompt, pot, _ = toy_task
    pool = trace_drawer(lm, prompt, pot, T)(None, 80, 0)
    torch.manual_seed(0)
    head = make_head("linear", lm.hidden_size, lm.vocab_size)
    saved = []
    # a large learning rate on a small pool: the head overfits, so the kept head is not the last one
    cfg = TrainConfig(steps=100, batch=80, inner=10, lr=0.3, max_tokens=T, proposal="pool", vocab_rows=0,
                      holdout=0.5)
    hist = train_twist(head, cfg, lambda tw, n, seed: pool,
                       on_round=lambda step, opt, h: saved.append({k: v.clone() for k, v in head.state_dict().items()}))
    assert hist.val_steps == list(range(0, 101, 10))  # the untrained head, then after every round
    best = min(range(len(hist.val_loss)), key=hist.val_loss.__getitem__)
    assert hist.best_step == hist.val_steps[best]
    # the held-out loss is the CTL loss on the second half of the pool, and the head returned (and saved last) is the best
    held = as_batch({k: v[40:] for k, v in pool.items()})
    with torch.no_grad():
        assert float(ctl_loss(head, held)) == pytest.approx(hist.val_loss[best], rel=1e-5)
    assert all(torch.equal(saved[-1][k], v) for k, v in head.state_dict().items())
    assert hist.val_loss[-1] > hist.val_loss[best]  # it did overfit: keeping the last head would have been worse
    with pytest.raises(HindsightError, match="holdout"):
        TrainConfig(proposal="twist", holdout=0.2).check()


def test_memory_head_gives_the_sampler_and_the_trainer_the_same_twist(toy_task):
    lm, prompt, pot, _ = toy_task
    torch.manual_seed(0)
    head = make_head("tied", lm.hidden_size, lm.vocab_size, rank=2, memory=True).attach(lm)
    state = lm.start(prompt, 3)
    assert torch.equal(head.log_psi(state), torch.zeros(3, lm.vocab_size))  # untrained: bootstrap
    for p in head.parameters():
        torch.nn.init.normal_(p)
    toks = torch.tensor([[2, 2, 0, 1], [0, 1, 2, 2], [1, 1, 1, 2]])
    sampler_side, hidden, norms = [], [], []
    for t in range(toks.shape[1]):  # what run_smc sees: log psi of every next token, from the state
        hidden.append(state.hidden.clone())
        full = head.log_psi(state)
        sampler_side.append(full.gather(1, toks[:, t:t + 1]).squeeze(1))
        norms.append(torch.logsumexp(state.logprobs + full, -1))  # log sum_s p(s | .) psi_t(., s)
        lm.step(state, toks[:, t])
    # what training sees: the traced hidden states and tokens, with the memory of each prefix
    batch = Batch(torch.stack(hidden, 1), toks, torch.zeros(3, 4), torch.zeros(3, 4),
                  torch.ones(3, 4, dtype=torch.bool), torch.zeros(3))
    with torch.no_grad():
        assert torch.allclose(_head_values(head, batch), torch.stack(sampler_side, 1), atol=1e-5)
        ref = vocab_reference(batch, 3, lm.logprobs_from_hidden)  # the pool's sum over the whole vocabulary
        assert torch.allclose(_exact_rows(head, ref, torch.arange(3)).float(), torch.stack(norms, 1), atol=1e-4)
    u = lm.output_embeddings().float() @ head.direction.detach()
    assert torch.allclose(head.prefix_memories(toks)[2], torch.tensor([0, u[1], 2 * u[1], 3 * u[1], 3 * u[1] + u[2]]),
                          atol=1e-5)
    # the memory changes the value: the same last token after different prefixes
    assert not torch.allclose(sampler_side[3][0], sampler_side[3][2])
    with pytest.raises(HindsightError, match="output embeddings"):
        make_head("tied", 8, 6, rank=0, memory=True).prefix_memories(toks)


def test_memory_head_learns_a_word_anywhere_target_a_memoryless_head_cannot(toy_task):
    # phi = 1 when a "c" occurs anywhere (else 0.02): E[phi | prefix] jumps to 1 at the first "c" and stays there.
    # A token-level twist forgets the "c" at the next step; the memory keeps its credit (exact KLs by enumeration).
    lm, prompt, _, _ = toy_task
    pot = Regex("c", penalty=0.02)
    tgt = exact_target(lm, prompt, pot, T)
    kls = {}
    for memory in (False, True):
        torch.manual_seed(0)
        head = make_head("tied", lm.hidden_size, lm.vocab_size, rank=0, memory=memory).attach(lm)
        cfg = TrainConfig(steps=150, batch=128, inner=4, lr=0.03, max_tokens=T, proposal="twist")
        train_twist(head, cfg, trace_drawer(lm, prompt, pot, T))
        kls[memory] = _kl(lm, prompt, pot, tgt, head)
    before = exact_kls(tgt, tgt.logp)  # (1.59, 1.27)
    # without memory: (0.43, 0.31); with it: (0.10, 0.08)
    assert kls[False][0] < 0.5 * before[0] and kls[False][1] < 0.5 * before[1], kls
    assert kls[True][0] < 0.4 * kls[False][0] and kls[True][1] < 0.4 * kls[False][1], kls


# ---- the shipped twist contract (hindsight.testing) on every kind of twist -------------------------------------
@functools.cache
def _toy_lm():
    from hindsight.lm.toy import toy_model

    return toy_model()


class _OnToy(TwistContract):
    def model(self):
        lm = _toy_lm()
        return lm, lm.encode("ab")

    def _trained_looking(self, kind, **kw):
        lm = _toy_lm()
        torch.manual_seed(0)
        head = make_head(kind, lm.hidden_size, lm.vocab_size, **kw).attach(lm)
        with torch.no_grad():
            for p in head.parameters():
                p.add_(0.3 * torch.randn_like(p))  # not the all-zero untrained head: rows must differ
        return head.eval()


class TestLinearTwistContract(_OnToy):
    def make(self):
        return self._trained_looking("linear")


class TestBoundedMLPTwistContract(_OnToy):
    def make(self):
        return self._trained_looking("mlp", width=16, bounded=True)


class TestTiedMemoryTwistContract(_OnToy):
    def make(self):
        return self._trained_looking("tied", rank=4, memory=True)


class TestTableTwistContract(_OnToy):
    def make(self):
        lm = _toy_lm()
        v = range(lm.vocab_size)  # the probe state has taken two tokens: keys are (s1, s2, next)
        return TableTwist({(a, b, c): 0.1 * (a - b + c) for a in v for b in v for c in v},
                          lm.vocab_size)
