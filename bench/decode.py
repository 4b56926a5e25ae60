"""Decoding cost of the engine vs transformers' generate, in the same run.

Samples N sequences of exactly T new tokens (EOS masked, as ``min_new_tokens`` does for generate) with
``start/step/select``, resampling rows at random every step as SMC would, and with
``model.generate(num_return_sequences=N)``. Prints both times and their ratio (target <= 1.10).

    python bench/decode.py [--model smollm2-135m] [--n 16] [--tokens 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROMPT, interleaved  # noqa: E402

from hindsight.lm import load_model  # noqa: E402
from hindsight.lm.sampling import sample_from_logprobs  # noqa: E402


def engine_run(lm, prompt_ids, n, tokens, resample: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    eos = torch.tensor(lm.eos_token_ids)
    state = lm.start(prompt_ids, n)
    for _ in range(tokens):
        lp = state.logprobs.clone()
        lp[:, eos] = float("-inf")
        tok = sample_from_logprobs(lp, generator=gen)
        lm.step(state, tok)
        if resample:
            state = lm.select(state, torch.randint(0, n, (n,), generator=gen))
    return state.tokens


def hf_run(lm, prompt_ids, n, tokens):
    x = torch.tensor([prompt_ids], device=lm.device)
    with torch.no_grad():
        return lm.model.generate(
            x, attention_mask=torch.ones_like(x), do_sample=True, num_return_sequences=n, max_new_tokens=tokens,
            min_new_tokens=tokens, top_k=0, top_p=1.0, temperature=1.0, pad_token_id=lm.pad_token_id,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    lm = load_model(args.model)
    ids = lm.chat(PROMPT)
    out = hf_run(lm, ids, args.n, args.tokens)
    assert out.shape == (args.n, len(ids) + args.tokens), out.shape
    assert engine_run(lm, ids, args.n, args.tokens, True).shape == (args.n, args.tokens)
    times = interleaved({
        "generate": lambda: hf_run(lm, ids, args.n, args.tokens),
        "engine": lambda: engine_run(lm, ids, args.n, args.tokens, resample=False),
        "engine+select": lambda: engine_run(lm, ids, args.n, args.tokens, resample=True),
    }, repeats=args.repeats)
    base = times["generate"]
    print(f"model={lm.name} device={lm.device} N={args.n} tokens={args.tokens} prompt={len(ids)} tokens "
          f"threads={torch.get_num_threads()} repeats={args.repeats} (median)")
    for k, v in times.items():
        print(f"  {k:<15} {v:7.3f} s   ratio vs generate {v / base:5.2f}")
    print(f"RATIO engine+select / generate = {times['engine+select'] / base:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
