"""Scoring N candidates: the batched pair scorer vs one raw padded forward over the same tokens, same run.

    PYTHONPATH=src python bench/score.py [--n 16] [--model smollm2-135m|tiny] [--repeats 3] [--scorer trlm-fo]

Prints the time per candidate of each and their ratio (target: scorer / raw <= 1.1). The raw baseline is a
plain ``model(input_ids, attention_mask)`` over exactly the padded token matrix the scorer builds, so the
ratio is the scorer's own overhead (tokenising, padding, gathering positions, the LM head on the scored
positions only) against a forward pass that produces all logits and does nothing with them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--scorer", default="trlm-fo")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from hindsight.lm import load_model
    from hindsight.lm.toy import tiny_model
    from hindsight.reverse.scorers import make_scorer

    lm = tiny_model() if args.model == "tiny" else load_model(args.model)
    words = ("the model reads a response and scores how well it explains the question that was asked "
             "before it, one token at a time").split()
    query = "why do we score a question given its answer"
    responses = [" ".join(words[: 6 + (3 * i) % len(words)]) * (1 + i % 3) for i in range(args.n)]
    if args.model == "tiny":
        query, responses = query.lower(), [r.lower()[:150] for r in responses]  # a 256-char context
    sc = make_scorer(args.scorer, lm, reverse_lm=lm)

    # the exact padded matrix the scorer sends (one batch: the token budget holds all N here)
    pairs = [sc.encode_pair(query, r) for r in responses]
    seqs = [c + t for c, t in pairs]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), lm.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    model = lm.model

    def raw() -> None:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)

    def scored() -> None:
        sc.score([query] * len(responses), responses)

    raw(), scored()  # warm up
    t_raw, t_sc = [], []
    for _ in range(args.repeats):  # interleaved, so load on a shared machine hits both alike
        t0 = time.perf_counter(); raw(); t_raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); scored(); t_sc.append(time.perf_counter() - t0)
    r, s = statistics.median(t_raw), statistics.median(t_sc)
    print(f"model {lm.name}, scorer {args.scorer}, {args.n} candidates, padded {tuple(ids.shape)}, "
          f"{int(mask.sum())} real tokens, median of {args.repeats}")
    print(f"raw padded forward : {1000 * r / args.n:8.2f} ms / candidate")
    print(f"batched scorer     : {1000 * s / args.n:8.2f} ms / candidate")
    print(f"ratio scorer / raw : {s / r:8.3f}   (target <= 1.1)")


if __name__ == "__main__":
    main()
