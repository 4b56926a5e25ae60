"""Benchmark: SMC against transformers' own ``generate`` on the same job, in the same run.

Job: N=16 completions of exactly 32 tokens after one prompt (EOS is masked out in both: ``min_new_tokens`` for
``generate``, ``min_tokens`` for SMC). Prints seconds (median over repeats, runs interleaved so machine load
hits both alike) and the ratios the issue targets: bootstrap / generate <= 1.15, twisted (linear head) /
generate <= 1.5; and the same for the tied head (outputs through the LM's embeddings, rank 64) and the tied head
with a memory of the completion so far (rank 0, the kind the example twist uses).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/smc.py [--model NAME] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hindsight.lm import load_model
from hindsight.potentials import parse_potential
from hindsight.samplers.smc import run_smc
from hindsight.twists.heads import make_head


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--particles", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--potential", default="toxicity")
    args = ap.parse_args()
    n, T = args.particles, args.tokens
    lm = load_model(args.model)
    ids = lm.encode("Once upon a time, there was a")
    pot = parse_potential(args.potential, lm=lm, prompt_ids=ids)
    torch.manual_seed(0)
    head = make_head("linear", lm.hidden_size, lm.vocab_size)
    torch.nn.init.normal_(head.out.weight, std=0.01)  # a real (non-zero) twist; cost does not depend on values
    tied = make_head("tied", lm.hidden_size, lm.vocab_size).attach(lm)
    torch.nn.init.normal_(tied.up.weight, std=0.01)
    memory = make_head("tied", lm.hidden_size, lm.vocab_size, rank=0, memory=True).attach(lm)
    torch.nn.init.normal_(memory.direction, std=0.01)
    x = torch.tensor([ids], device=lm.device)

    def hf_generate(seed: int) -> None:
        torch.manual_seed(seed)
        with torch.no_grad():
            out = lm.model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, num_return_sequences=n,
                                    max_new_tokens=T, min_new_tokens=T, top_k=0, top_p=1.0, temperature=1.0,
                                    pad_token_id=lm.pad_token_id)
        assert out.shape == (n, len(ids) + T)

    def bootstrap(seed: int) -> None:
        res = run_smc(lm, ids, pot, n, T, seed=seed, min_tokens=T)
        assert all(len(s) == T for s in res.sequences)

    def twisted_with(twist):
        def run(seed: int) -> None:
            res = run_smc(lm, ids, pot, n, T, twist=twist, seed=seed, min_tokens=T)
            assert all(len(s) == T for s in res.sequences)
        return run

    jobs = {"generate": hf_generate, "bootstrap": bootstrap, "twisted": twisted_with(head),
            "tied": twisted_with(tied), "memory": twisted_with(memory)}
    for fn in jobs.values():  # warm-up
        fn(0)
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for r in range(args.repeats):
        for name, fn in jobs.items():
            t0 = time.perf_counter()
            fn(r + 1)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model {lm.name}, N={n}, {T} tokens, {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    for k, v in med.items():
        print(f"  {k:10s} {v:7.3f}s  (runs: {' '.join(f'{t:.2f}' for t in times[k])})")
    print(f"bootstrap / generate = {med['bootstrap'] / med['generate']:.3f}  (target <= 1.15)")
    print(f"twisted / generate   = {med['twisted'] / med['generate']:.3f}  (target <= 1.5)")
    print(f"tied / generate      = {med['tied'] / med['generate']:.3f}  (target <= 1.5)")
    print(f"memory / generate    = {med['memory'] / med['generate']:.3f}  (target <= 1.5)")


if __name__ == "__main__":
    main()
