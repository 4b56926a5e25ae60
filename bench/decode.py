"""Decoding cost of the engine, shared-prefix vs per-row KV layout, and vs transformers' generate, same run.

Samples N sequences of exactly T new tokens (EOS masked, as ``min_new_tokens`` does for generate) with
``start/step/select``, resampling rows at random every step as SMC would, under both KV layouts
(``lm.kv_layout``), and with ``model.generate(num_return_sequences=N)``. First both layouts are run in lockstep
on the same tokens and resampling, and their log-probs must agree to 1e-3. The prefix LRU is cleared before each
engine run, so every run pays for its prefill as generate does. ``--prompt-tokens P`` uses a random P-token
prompt instead of the short chat prompt (generate then prefills N copies of it: time it once with
``--generate-repeats 1``, or 0 to skip it). Targets: shared / generate <= 1.10 at the default prompt; per-row / shared >= 1.5 at
P=512, N=64.

    python bench/decode.py [--model smollm2-135m] [--n 16] [--tokens 32] [--repeats 5] [--prompt-tokens 512]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROMPT, median_time  # noqa: E402

from hindsight.lm import load_model  # noqa: E402
from hindsight.lm.sampling import sample_from_logprobs  # noqa: E402


def engine_run(lm, prompt_ids, n, tokens, resample: bool, seed: int = 0, layout: str | None = None):
    if layout is not None:
        lm.kv_layout = layout
    lm.prefixes.clear()
    gen = torch.Generator().manual_seed(seed)
    eos = torch.tensor(lm.eos_token_ids)
    state = lm.start(prompt_ids, n)
    t0 = time.perf_counter()
    for _ in range(tokens):
        lp = state.logprobs.clone()
        lp[:, eos] = float("-inf")
        tok = sample_from_logprobs(lp, generator=gen)
        lm.step(state, tok)
        if resample:
            state = lm.select(state, torch.randint(0, n, (n,), generator=gen))
    return state.tokens, time.perf_counter() - t0


def layouts_agree(lm, prompt_ids, n, tokens, seed: int = 0, tol: float = 1e-3) -> float:
    """Both layouts in lockstep on the same tokens and the same resampling (teacher-forced from the per-row
    run): the largest difference of their next-token log-probs, which must stay under ``tol``.

    Sampling each layout on its own cannot be compared token for token: a near-tie can round to a different
    token in either layout, after which the runs are unrelated."""
    gen = torch.Generator().manual_seed(seed)
    eos = torch.tensor(lm.eos_token_ids)
    states = {}
    for layout in ("per-row", "shared"):
        lm.kv_layout = layout
        lm.prefixes.clear()
        states[layout] = lm.start(prompt_ids, n)
    worst = 0.0
    for _ in range(tokens):
        a, b = states["per-row"].logprobs, states["shared"].logprobs
        finite = torch.isfinite(a)
        assert torch.equal(finite, torch.isfinite(b)), "the layouts disagree on which tokens are possible"
        worst = max(worst, float((a[finite] - b[finite]).abs().max()))
        lp = a.clone()
        lp[:, eos] = float("-inf")
        tok = sample_from_logprobs(lp, generator=gen)
        rows = torch.randint(0, n, (n,), generator=gen)
        for layout in states:
            lm.step(states[layout], tok)
            states[layout] = lm.select(states[layout], rows)
    assert worst <= tol, f"the layouts' log-probs differ by {worst:.2e} (> {tol})"
    return worst


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
    ap.add_argument("--prompt-tokens", type=int, default=0, help="a random prompt of this many tokens (0: chat)")
    ap.add_argument("--generate-repeats", type=int, default=None,
                    help="timed generate runs (default --repeats; 0: not timed, its ratios print nan)")
    ap.add_argument("--select-only", action="store_true", help="time only the runs that resample every step")
    args = ap.parse_args()
    lm = load_model(args.model)
    if args.prompt_tokens:
        ids = torch.randint(100, 20000, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    else:
        ids = lm.chat(PROMPT)
    worst = layouts_agree(lm, ids, args.n, args.tokens)
    runs = {f"engine{'+select' if sel else ''} {lay}": (sel, lay) for sel in ((True,) if args.select_only else
                                                                                   (False, True))
            for lay in ("per-row", "shared")}
    total: dict[str, list[float]] = {k: [] for k in runs}
    steps: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):  # interleaved, so that machine load hits every configuration alike
        for k, (sel, lay) in runs.items():
            t0 = time.perf_counter()
            _, step_s = engine_run(lm, ids, args.n, args.tokens, sel, layout=lay)
            total[k].append(time.perf_counter() - t0)
            steps[k].append(step_s)
    times = {k: statistics.median(v) for k, v in total.items()}
    step_ms = {k: 1000 * statistics.median(v) / args.tokens for k, v in steps.items()}
    reps = args.repeats if args.generate_repeats is None else args.generate_repeats
    if reps:
        out = hf_run(lm, ids, args.n, args.tokens)
        assert out.shape == (args.n, len(ids) + args.tokens), out.shape
        times["generate"] = median_time(lambda: hf_run(lm, ids, args.n, args.tokens), reps, warmup=0)
    base = times.get("generate", float("nan"))
    print(f"model={lm.name} device={lm.device} N={args.n} tokens={args.tokens} prompt={len(ids)} tokens "
          f"threads={torch.get_num_threads()} repeats={args.repeats} (median; each engine run includes its prefill)")
    print(f"  layouts agree on teacher-forced tokens: max |log-prob difference| = {worst:.1e}")
    for k, v in times.items():
        per_step = f"{step_ms[k]:8.1f} ms/step (prefill excluded)" if k in step_ms else " " * 32
        print(f"  {k:<22} {v:8.3f} s  {per_step}   ratio vs generate {v / base:5.2f}")
    print(f"RATIO engine+select shared / generate = {times['engine+select shared'] / base:.3f} (target <= 1.10)")
    print(f"RATIO engine+select per-row / generate = {times['engine+select per-row'] / base:.3f}")
    ratio = step_ms["engine+select per-row"] / step_ms["engine+select shared"]
    print(f"RATIO per-row/shared step time = {ratio:.2f}")


if __name__ == "__main__":
    main()
