"""The shared-prefix KV layout against the plain definition (an uncached forward over the whole sequence)."""

import pytest
import torch
from transformers import Gemma3TextConfig, Gemma3ForCausalLM, GPT2Config, GPT2LMHeadModel, Qwen2Config
from transformers import Qwen2ForCausalLM

from hindsight.errors import HindsightError
from hindsight.lm.cascade import SUFFIX_BLOCK, SharedPrefixCache, capacity, two_part_attention
from hindsight.lm.hf import HFLanguageModel, log_softmax_rows_
from hindsight.lm.toy import TINY_SYMBOLS, char_tokenizer, tiny_model

V = len(TINY_SYMBOLS) + 1


def _wrap(model, name, layout="shared"):
    torch.manual_seed(0)
    return HFLanguageModel(model.eval(), char_tokenizer(TINY_SYMBOLS), name=name, device="cpu", kv_layout=layout)


def tiny_gemma3():
    """Gemma 3 with sliding-window layers (window 6) between full ones, so windows cut into the prompt."""
    cfg = Gemma3TextConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=6,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                           max_position_embeddings=256, eos_token_id=V - 1, pad_token_id=V - 1, bos_token_id=None,
                           initializer_range=0.3, attn_implementation="sdpa")
    torch.manual_seed(1)
    model = Gemma3ForCausalLM(cfg)
    model.generation_config.eos_token_id = V - 1
    return _wrap(model, "tiny-gemma3")


def tiny_qwen2():
    cfg = Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=1, max_position_embeddings=256, eos_token_id=V - 1, pad_token_id=V - 1,
                      bos_token_id=None, initializer_range=0.3, attn_implementation="sdpa")
    torch.manual_seed(2)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = V - 1
    return _wrap(model, "tiny-qwen2")


MODELS = {"llama": tiny_model, "gemma3": tiny_gemma3, "qwen2": tiny_qwen2}


@pytest.fixture(scope="module", params=list(MODELS))
def shared_lm(request):
    lm = MODELS[request.param]()
    assert lm.kv_layout == "shared"
    return lm


def reference(lm, state):
    """Next-token log-probs of every row from one uncached forward each."""
    return lm.next_logprobs([state.prompt_ids + state.tokens[i].tolist() for i in range(state.n)], batch_size=1)


def assert_exact(lm, state):
    assert isinstance(state.cache, SharedPrefixCache)
    assert torch.allclose(state.logprobs, reference(lm, state), atol=1e-4)


def test_steps_extends_selects_and_finished_rows(shared_lm):
    lm, gen = shared_lm, torch.Generator().manual_seed(0)
    eos = lm.eos_token_ids[0]
    state = lm.start(lm.encode("the keeper climbed the stairs"), 4)
    lp = lm.extend(state, torch.randint(0, V - 1, (4, 3), generator=gen))
    assert torch.allclose(lp, torch.stack(lm.score([state.prompt_ids] * 4, state.tokens.tolist())), atol=1e-4)
    assert_exact(lm, state)
    for t in range(9):
        tok = torch.randint(0, V - 1, (state.n,), generator=gen)
        if t == 5:
            tok[1] = eos  # row 1 finishes and keeps being fed a filler
        lm.step(state, tok)
        if t % 3 == 2:  # resampling that duplicates and drops rows, and changes the row count
            n_new = int(torch.randint(2, 7, (1,), generator=gen))
            state = lm.select(state, torch.randint(0, state.n, (n_new,), generator=gen))
        assert_exact(lm, state)
    assert bool(state.done.any()) or state.n > 0


def test_appends_in_place_never_reach_another_state(shared_lm):
    """Suffixes grow in place inside spare room: a state and rows selected from it are stepped apart, past
    several buffer reallocations, and each must still equal recomputation (no shared buffer between them)."""
    lm, gen = shared_lm, torch.Generator().manual_seed(1)
    parent = lm.start(lm.encode("the lamp turned all night"), 3)
    lm.step(parent, torch.tensor([1, 2, 3]))
    child = lm.select(parent, [2, 0, 0, 1])
    for _ in range(SUFFIX_BLOCK + 3):  # crosses a block boundary, so both reallocate at least once
        lm.step(parent, torch.randint(0, V - 1, (3,), generator=gen))
        lm.step(child, torch.randint(0, V - 1, (4,), generator=gen))
    assert child.cache.layers[0].keys.data_ptr() != parent.cache.layers[0].keys.data_ptr()
    assert_exact(lm, parent)
    assert_exact(lm, child)
    lay = child.cache.layers[0]
    assert lay.keys.shape[-2] == child.tokens.shape[1] == SUFFIX_BLOCK + 4
    assert lay.nbytes() >= lay.keys.numel() * lay.keys.element_size() * 2  # spare room is counted


def test_suffix_capacity_grows_by_blocks_and_an_eighth():
    assert capacity(0) == 0 and capacity(1) == SUFFIX_BLOCK and capacity(SUFFIX_BLOCK + 1) == 2 * SUFFIX_BLOCK
    for size in (5, 17, 100, 1000, 4099):
        assert size + size // 8 <= capacity(size) < size + size // 8 + SUFFIX_BLOCK
        assert capacity(size) % SUFFIX_BLOCK == 0


def test_in_place_log_softmax_is_bitwise_the_whole_matrix_one():
    logits = torch.randn(37, 1000, generator=torch.Generator().manual_seed(0)) * 5
    want = torch.log_softmax(logits, dim=-1)
    got = log_softmax_rows_(logits)
    assert got.data_ptr() == logits.data_ptr() and torch.equal(got, want)


def test_fold_a_committed_common_prefix(shared_lm):
    lm = shared_lm
    state = lm.start(lm.encode("a message in a bottle"), 3)
    for t in range(18):
        lm.step(state, torch.tensor([t % 20, (t + 3) % 20, (t + 7) % 20]))
    p_len = state.cache.shared_length
    state = lm.select(state, [1, 1, 1, 1])  # a commit: every row now agrees on 18 appended tokens
    assert state.cache.shared_length == p_len + 18 and state.cache.suffix_length == 0
    lm.step(state, torch.tensor([1, 2, 3, 4]))
    assert_exact(lm, state)
    state = lm.select(state, [3, 0])  # they differ in the last token only: nothing more to fold
    assert state.cache.suffix_length == 1
    lm.step(state, torch.tensor([5, 6]))
    assert_exact(lm, state)


@pytest.mark.parametrize("side", ["left", "right"])
def test_score_with_prefix(shared_lm, side):
    lm = shared_lm
    if side == "left" and lm.name == "tiny-gemma3":
        pytest.skip("transformers' sliding-window mask counts left-padding columns (the per-row layout differs too)")
    pre_ids = lm.encode("question: why is the sea salty? passage: ")
    pre = lm.start(pre_ids, 1)
    lm.step(pre, torch.tensor([3]))  # a prefix state with one token of its own
    ctx = [lm.encode(t) for t in ["rivers carry salt", "a", "", "because"]]
    cont = [lm.encode(t) for t in [" down.", "b c", "it is", "!"]]
    got = lm.score(ctx, cont, prefix=pre, padding_side=side)
    want = lm.score([pre_ids + [3] + c for c in ctx], cont)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-4)
    nl = lm.next_logprobs(ctx[:2], prefix=pre)
    assert torch.allclose(nl, lm.next_logprobs([pre_ids + [3] + c for c in ctx[:2]]), atol=1e-4)


def test_layouts_agree_and_switch(tiny):
    prompt = tiny.encode("one shared prompt for every row")
    states = {}
    for layout in ("per-row", "shared"):
        tiny.kv_layout = layout
        s = tiny.start(prompt, 3)
        for t in range(4):
            tiny.step(s, torch.tensor([t, t + 1, t + 2]))
        s = tiny.select(s, [2, 2, 0])
        tiny.step(s, torch.tensor([4, 5, 6]))
        states[layout] = s
    tiny.kv_layout = "shared"
    assert not isinstance(states["per-row"].cache, SharedPrefixCache)
    assert torch.allclose(states["per-row"].logprobs, states["shared"].logprobs, atol=1e-5)
    with pytest.raises(HindsightError):
        tiny.kv_layout = "paged"


def test_uncovered_model_falls_back_to_per_row():
    cfg = GPT2Config(vocab_size=V, n_embd=16, n_layer=1, n_head=2, n_positions=64, eos_token_id=V - 1,
                     bos_token_id=V - 1)
    torch.manual_seed(0)
    lm = _wrap(GPT2LMHeadModel(cfg), "tiny-gpt2")
    assert lm.kv_layout == "per-row"
    state = lm.start([1, 2, 3], 2)
    lm.step(state, torch.tensor([4, 5]))
    assert torch.allclose(state.logprobs, reference(lm, state), atol=1e-5)


def test_prefix_lru_reuses_and_is_bounded(tiny):
    system = tiny.encode("system: you are a careful lighthouse keeper.\n")
    assert len(system) >= 16
    tiny.prefixes.clear()
    before = tiny.counters.snapshot()
    first = tiny.start(system, 2)
    again = tiny.start(system, 2)
    used = tiny.counters.since(before)
    assert used.forward_passes == 1 and used.prefix_hits == 1 and used.prefix_tokens == len(system)
    assert again.cache.layers[0].shared_keys is first.cache.layers[0].shared_keys
    longer = system + tiny.encode("user: hello")
    state = tiny.start(longer, 2)  # prefills only the part after the stored system prompt
    used = tiny.counters.since(before)
    assert used.prefix_hits == 2 and used.tokens == len(system) + len(longer) - len(system)
    assert torch.allclose(state.logprobs, reference(tiny, state), atol=1e-5)
    assert len(tiny.prefixes.entries) == 2
    tiny.prefixes.max_bytes = tiny.prefixes.entries[tuple(longer)].nbytes  # room for one entry only
    tiny.prefixes.put(tiny._prefill(system + [3]))
    assert list(tiny.prefixes.entries) == [tuple(system + [3])] and tiny.prefixes.bytes <= tiny.prefixes.max_bytes
    tiny.prefixes.max_bytes = 256 * 2**20
    tiny.prefixes.clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_two_part_attention_is_one_softmax(dtype):
    g = torch.Generator().manual_seed(0)
    n, hq, hkv, length, p_len, s_len, d = 3, 6, 2, 2, 5, 4, 8
    q = torch.randn(n, hq, length, d, generator=g).to(dtype)
    k1, v1 = (torch.randn(1, hkv, p_len, d, generator=g).to(dtype) for _ in range(2))
    k2, v2 = (torch.randn(n, hkv, s_len, d, generator=g).to(dtype) for _ in range(2))
    mask = torch.rand(n, 1, length, p_len + s_len, generator=g) > 0.3
    mask[..., 0] = True
    for softcap in (None, 3.0):
        got = two_part_attention(q, k1, v1, k2, v2, mask, 0.3, softcap).float()
        keys = torch.cat([k1.expand(n, -1, -1, -1), k2], 2).float().repeat_interleave(hq // hkv, 1)
        vals = torch.cat([v1.expand(n, -1, -1, -1), v2], 2).float().repeat_interleave(hq // hkv, 1)
        s = q.float() @ keys.transpose(-1, -2) * 0.3
        s = torch.tanh(s / softcap) * softcap if softcap else s
        want = torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ vals
        assert torch.allclose(got, want, atol=1e-5 if dtype == torch.float32 else 2e-2)
