"""RAIN vs KV-cached vanilla sampling: wall time per output token, forward passes per output token.

    PYTHONPATH=src python bench/rain.py [--prompts 3] [--max-tokens 48] [--max-iters 50] [--evaluator self]
        [--value-rule vote|soft] [--vanilla-repeats 3]
    PYTHONPATH=src python bench/rain.py --batch 8 [--max-tokens 16 --max-iters 10] [--evaluator toxicity:low,self]

Both run in this process on the same model and prompts (HH harmless first turns, or built-in prompts when the
data is absent). Vanilla is ``lm.generate`` (prefill once, one cached forward per token, top-k 15 like RAIN's
candidates; timed ``--vanilla-repeats`` times, median). Prints one row per prompt and the overall ratio (target
at the HH defaults: <= 4x), plus where RAIN's time went (evaluator calls, MiniLM embeddings) and how many
commits the early stop ended.

``--batch B``: the same B prompts searched one at a time and all together (``Rain.run_many``), for the confident
``toxicity:low`` evaluator and the self-evaluation; prints each throughput and ends with the lower ratio.

``--stream N --batch B``: N prompts as an evaluation runs them: one at a time, in chunks of B (each chunk waits
for its slowest search) and as a stream that keeps B searches going (``Rain.stream``: a finished search's place
goes to the next prompt at once); ends with the stream's throughput over the chunks'.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hindsight.experiments.rain_judges import hh_rows, make_rain_evaluator
from hindsight.lm import load_model
from hindsight.samplers.rain import Rain, RainConfig

FALLBACK = ["How do I pick a lock?", "What is a good way to insult my coworker?", "How can I make my neighbor's dog stop barking?"]


def value_histogram(values: list[float]) -> dict[str, int]:
    """How many distinct texts the evaluator judged, by value: -1 / 0 / +1 for the vote rule, else in bins."""
    out: dict[str, int] = {}
    for v in values:
        key = f"{v:+.0f}" if v in (-1.0, 0.0, 1.0) else ("<-0.5" if v < -0.5 else "<0" if v < 0 else "<0.5" if v < 0.5
                                                           else "<0.8" if v <= 0.8 else ">0.8")
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a model name or checkpoint directory (default: the packaged one)")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--max-iters", type=int, default=50)
    ap.add_argument("--evaluator", default="self")
    ap.add_argument("--value-rule", default="vote", choices=["vote", "soft"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vanilla-repeats", type=int, default=3, help="time vanilla this often, take the median")
    ap.add_argument("--batch", type=int, default=0,
                    help="compare B prompts searched together with the same B one at a time (both evaluators)")
    ap.add_argument("--stream", type=int, default=0,
                    help="with --batch B: N prompts one at a time, in chunks of B and as a stream of width B")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    lm = load_model(args.model)
    try:
        prompts = [r["prompt"] for r in hh_rows(limit=max(args.prompts, args.batch, args.stream))]
    except Exception:  # no data folder: built-in prompts
        prompts = (FALLBACK * 8)[: max(args.prompts, args.batch, args.stream)]
    if args.stream:
        stream_mode(args, lm, prompts[: args.stream])
        return
    if args.batch:
        batch_mode(args, lm, prompts[: args.batch])
        return
    search = Rain(lm, make_rain_evaluator(args.evaluator, lm, "harmless", value_rule=args.value_rule),
                  RainConfig.for_task("harmless", max_tokens=args.max_tokens, max_iters=args.max_iters, seed=args.seed))
    spent = {"eval_s": 0.0, "eval_calls": 0, "eval_texts": 0, "embed_s": 0.0}

    def timed(fn, key, count=None):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t
                if count:  # values_many([(prompt, texts), ...]): one call, all the texts of all the searches
                    spent["eval_calls"] += 1
                    spent["eval_texts"] += sum(len(texts) for _, texts in a[0])
        return wrapper

    search.evaluator.values_many = timed(search.evaluator.values_many, "eval_s", count=True)
    search.embed = timed(search.embed, "embed_s")
    search.embed(["warm-up"])  # load MiniLM outside the timed runs (vanilla has no such cost either)
    spent["embed_s"] = 0.0
    lm.generate(prompts[0], max_tokens=4, seed=0)  # warm-up
    rows, tot = [], {"rain_s": 0.0, "rain_tok": 0, "rain_fp": 0, "van_s": 0.0, "van_tok": 0, "van_fp": 0,
                     "rain_fwd_s": 0.0, "iters": 0, "commits": 0, "early": 0}
    for p in prompts:
        before = lm.counters.snapshot()
        times = []
        for _ in range(args.vanilla_repeats):  # the same seeded sample each time; the median damps load spikes
            t0 = time.perf_counter()
            s = lm.generate(p, max_tokens=args.max_tokens, top_k=15, seed=args.seed)[0]
            times.append(time.perf_counter() - t0)
        van_s = statistics.median(times)
        van_fp = lm.counters.since(before).forward_passes // args.vanilla_repeats
        before = lm.counters.snapshot()
        res = search.run(p)
        fwd_s = lm.counters.since(before).seconds
        per_van = van_s / max(1, len(s.tokens))
        per_rain = res.seconds / max(1, len(res.tokens))
        rows.append({"prompt": p[:50], "rain_tokens": len(res.tokens), "vanilla_tokens": len(s.tokens),
                     "iterations": res.iterations, "commits": len(res.steps), "rain_s": round(res.seconds, 2), "vanilla_s": round(van_s, 3),
                     "ratio_per_token": round(per_rain / per_van, 1),
                     "rain_fp_per_token": round(res.forward_passes / max(1, len(res.tokens)), 1),
                     "vanilla_fp_per_token": round(van_fp / max(1, len(s.tokens)), 2)})
        tot["rain_s"] += res.seconds
        tot["rain_tok"] += len(res.tokens)
        tot["rain_fp"] += res.forward_passes
        tot["rain_fwd_s"] += fwd_s
        tot["iters"] += res.iterations
        tot["commits"] += len(res.steps)
        cfg = search.cfg
        tot["early"] += sum(st["visits"] > cfg.min_visits and st["value"] > cfg.value_threshold for st in res.steps)
        tot["van_s"] += van_s
        tot["van_tok"] += len(s.tokens)
        tot["van_fp"] += van_fp
    summary = {
        "settings": {"prompts": len(prompts), "max_tokens": args.max_tokens, "max_iters": args.max_iters,
                     "evaluator": search.evaluator.name, "threads": torch.get_num_threads()},
        "rain_s_per_token": round(tot["rain_s"] / tot["rain_tok"], 3),
        "vanilla_s_per_token": round(tot["van_s"] / tot["van_tok"], 4),
        "ratio_per_output_token": round((tot["rain_s"] / tot["rain_tok"]) / (tot["van_s"] / tot["van_tok"]), 1),
        "rain_forward_passes_per_token": round(tot["rain_fp"] / tot["rain_tok"], 1),
        "vanilla_forward_passes_per_token": round(tot["van_fp"] / tot["van_tok"], 2),
        "rain_share_in_lm_forwards": round(tot["rain_fwd_s"] / tot["rain_s"], 2),
        "iterations_per_output_token": round(tot["iters"] / tot["rain_tok"], 2),
        "commits": tot["commits"], "commits_ended_by_early_stop": tot["early"],
        "rain_share_in_evaluator": round(spent["eval_s"] / tot["rain_s"], 2),
        "evaluator_calls": spent["eval_calls"], "evaluator_texts": spent["eval_texts"],
        "rain_share_in_embeddings": round(spent["embed_s"] / tot["rain_s"], 3),
        "values_seen": value_histogram(list(search.evaluator._memo.values())),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for r in rows:
            print(r)
        print({k: v for k, v in summary.items() if k != "rows"})
    print(f"RATIO rain/generate time per output token = {summary['ratio_per_output_token']}")


def batch_mode(args, lm, prompts: list[str]) -> None:
    """Throughput (output tokens per second) of the prompts searched together vs one at a time, per evaluator.

    Also checks that both ways give the same answers (they must: batching only shares forwards)."""
    evaluators = [e for e in args.evaluator.split(",")] if args.evaluator != "self" else ["toxicity:low", "self"]
    ratios = {}
    for spec in evaluators:
        def search():
            return Rain(lm, make_rain_evaluator(spec, lm, "harmless", value_rule=args.value_rule),
                        RainConfig.for_task("harmless", max_tokens=args.max_tokens, max_iters=args.max_iters,
                                            seed=args.seed))
        search().run(prompts[0][:20])  # warm-up (loads the evaluator's model and MiniLM)
        t0 = time.perf_counter()
        alone = [search().run(p) for p in prompts]
        t_alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        together = search().run_many(prompts)
        t_together = time.perf_counter() - t0
        same = all(a.tokens == b.tokens and a.iterations == b.iterations for a, b in zip(alone, together))
        tokens = sum(len(r.tokens) for r in alone)
        ratios[spec] = (tokens / t_together) / (tokens / t_alone)
        print(json.dumps({"evaluator": spec, "prompts": len(prompts), "max_tokens": args.max_tokens,
                          "max_iters": args.max_iters, "output_tokens": tokens,
                          "iterations": sum(r.iterations for r in alone),
                          "one_at_a_time_s": round(t_alone, 1), "batched_s": round(t_together, 1),
                          "one_at_a_time_tok_per_s": round(tokens / t_alone, 3),
                          "batched_tok_per_s": round(tokens / t_together, 3),
                          "forward_passes_one_at_a_time": sum(r.forward_passes for r in alone),
                          "forward_passes_batched": round(sum(r.forward_passes for r in together)),
                          "same_answers": same, "ratio": round(ratios[spec], 2)}))
    worst = min(ratios, key=ratios.get)
    print(f"RATIO batched/unbatched throughput = {ratios[worst]:.2f}  (lowest of: "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) + ")")


def stream_mode(args, lm, prompts: list[str]) -> None:
    """Throughput over N prompts: one at a time, chunks of B (``run_many``) and a stream of width B."""
    width = max(1, args.batch)
    spec = args.evaluator

    def search():
        return Rain(lm, make_rain_evaluator(spec, lm, "harmless", value_rule=args.value_rule),
                    RainConfig.for_task("harmless", max_tokens=args.max_tokens, max_iters=args.max_iters,
                                        seed=args.seed))

    search().run(prompts[0][:20])  # warm-up (loads the evaluator's model and MiniLM)
    out, times = {}, {}
    t0 = time.perf_counter()
    out["alone"] = [search().run(p) for p in prompts]
    times["alone"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["chunks"] = [r for at in range(0, len(prompts), width) for r in search().run_many(prompts[at: at + width])]
    times["chunks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = dict(search().stream(prompts, width))
    times["stream"] = time.perf_counter() - t0
    out["stream"] = [got[i] for i in range(len(prompts))]
    same = all(a.tokens == b.tokens == c.tokens for a, b, c in zip(out["alone"], out["chunks"], out["stream"]))
    tokens = sum(len(r.tokens) for r in out["alone"])
    print(json.dumps({"evaluator": spec, "prompts": len(prompts), "width": width, "max_tokens": args.max_tokens,
                      "max_iters": args.max_iters, "output_tokens": tokens,
                      **{f"{k}_s": round(v, 1) for k, v in times.items()},
                      **{f"{k}_tok_per_s": round(tokens / v, 3) for k, v in times.items()},
                      "chunks/alone": round(times["alone"] / times["chunks"], 2),
                      "stream/alone": round(times["alone"] / times["stream"], 2), "same_answers": same}))
    print(f"RATIO stream/chunked throughput = {times['chunks'] / times['stream']:.2f}")


if __name__ == "__main__":
    main()
