"""Tiny models for tests and examples, built from a config in memory (no download, no files).

- :func:`tiny_model`: a randomly initialised Llama over a character vocabulary, for engine tests.
- :func:`toy_model`: a model with a handful of tokens whose every completion up to a short horizon can be
  listed by :func:`enumerate_sequences`, so estimators can be compared with exact values.
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Sequence

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hindsight.lm.hf import HFLanguageModel

EOS = "<eos>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def char_tokenizer(symbols: Sequence[str]) -> PreTrainedTokenizerFast:
    """A tokenizer with one token per symbol (listed order = ids) plus ``<eos>`` as the last id."""
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab[EOS] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=EOS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _llama(vocab: int, *, hidden: int, layers: int, heads: int, kv_heads: int, context: int, seed: int,
           init: float) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=context,
        initializer_range=init,
        tie_word_embeddings=False,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
        bos_token_id=None,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = vocab - 1
    return model.eval()


TINY_SYMBOLS = list(string.ascii_lowercase + " .,?!:;'\n")


def tiny_model(seed: int = 0, context: int = 256) -> HFLanguageModel:
    """A random 2-layer Llama over lowercase characters (~37 tokens); outputs are noise, but real."""
    tok = char_tokenizer(TINY_SYMBOLS)
    model = _llama(len(TINY_SYMBOLS) + 1, hidden=32, layers=2, heads=4, kv_heads=2, context=context, seed=seed,
                   init=0.3)
    return HFLanguageModel(model, tok, name="tiny", device="cpu")


TOY_SYMBOLS = ["a", "b", "c"]


def toy_model(seed: int = 0) -> HFLanguageModel:
    """Three symbols plus ``<eos>``: every completion of a few tokens can be enumerated exactly.

    The weights are initialised large so that next-token distributions are far from uniform (and differ by
    context), which makes sampler errors visible.
    """
    tok = char_tokenizer(TOY_SYMBOLS)
    model = _llama(len(TOY_SYMBOLS) + 1, hidden=16, layers=1, heads=2, kv_heads=1, context=32, seed=seed,
                   init=0.6)
    return HFLanguageModel(model, tok, name="toy", device="cpu")


def enumerate_sequences(
    lm: HFLanguageModel, prompt_ids: Sequence[int], max_tokens: int
) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Every completion of at most ``max_tokens`` tokens and its exact log-probability (float64).

    A completion either ends with EOS (at any step up to ``max_tokens``) or is cut at ``max_tokens`` tokens
    without one; these events partition the sample space, so the probabilities sum to one.
    """
    if lm.vocab_size ** max_tokens > 200_000:
        raise ValueError("Too many sequences to enumerate; use a smaller vocabulary or horizon.")
    eos = set(lm.eos_token_ids)
    normal = [t for t in range(lm.vocab_size) if t not in eos]
    seqs: list[tuple[int, ...]] = []
    for length in range(1, max_tokens + 1):
        for body in itertools.product(normal, repeat=length - 1):
            for e in sorted(eos):
                seqs.append((*body, e))
            if length == max_tokens:
                seqs.extend((*body, t) for t in normal)
    prompt = [int(t) for t in prompt_ids]
    scores = lm.score([prompt] * len(seqs), [list(s) for s in seqs])
    logp = torch.tensor([float(s.double().sum()) for s in scores], dtype=torch.float64)
    total = float(torch.logsumexp(logp, 0))
    assert math.isclose(total, 0.0, abs_tol=1e-4), f"enumeration does not sum to 1 (log total {total})"
    return seqs, logp


def save_checkpoint(lm: HFLanguageModel, path) -> None:
    """Write a model from this module as an ordinary checkpoint directory (for ``--model PATH`` tests)."""
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
