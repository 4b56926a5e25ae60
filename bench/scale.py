"""Items/s of one evaluation in one process vs on ``--workers 2`` Ray actors (one torch thread each).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/scale.py [--items 12] [--workers 2]

The evaluation is ``eval preferences`` (the ``forward`` scorer, packaged model) on the first items of
shared/data, or the toy model's bounds runs when the data or the model are absent. Timed: the items only
(the model is loaded before the clock starts in the single process, and the clock starts at the first record
on the workers, whose model loading is reported apart). The driver's per-item overhead is measured with an
experiment whose items do nothing. Last line: ``RATIO workers/single throughput = X``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hindsight.distributed import Scale, ray_executor  # noqa: E402
from hindsight.experiments.runner import Experiment, Loaders, run_experiment  # noqa: E402
from hindsight.records.results import ResultFile  # noqa: E402


@dataclass
class Noop(Experiment):
    """Items that cost nothing: what is left is the driver's and Ray's cost per item."""

    n: int = 200
    name = "noop"

    def items(self):
        return [{"key": i} for i in range(self.n)]

    def setup(self, loaders):
        return {}

    def run_item(self, item):
        return {"key": item["key"]}

    def summarise(self, records):
        return len(records)


def toy_loader(name, device):
    from hindsight.lm.toy import toy_model

    return toy_model()


def experiment(items: int, toy: bool = False):
    """(experiment factory, loaders, what it is)."""
    from hindsight.lm.registry import DEFAULT_MODEL, MODELS, _installed_file, is_cached

    data = os.environ.get("HINDSIGHT_DATA", "/work/shared/data")
    have_model = is_cached(DEFAULT_MODEL) or _installed_file(MODELS[DEFAULT_MODEL]) is not None
    if Path(data, "alpaca_eval").is_dir() and have_model and not toy:
        from hindsight.experiments.trlm import PreferenceEval

        return (lambda: PreferenceEval(scorers=["forward"], data=data, limit=items)), None, \
            f"eval preferences, forward scorer, {DEFAULT_MODEL}, {items} pairs"
    from hindsight.experiments.bounds import BoundRuns, rejection_samples
    from hindsight.potentials.spec import parse_potential

    lm = toy_loader(None, None)
    prompt = lm.encode("ab")
    refs, _ = rejection_samples(lm, prompt, parse_potential("regex:cc"), items, 4)
    cfg = dict(samplers=["bootstrap"], particles=[64], seeds=items, max_tokens=4, prompt=prompt, raw=True,
               potential="regex:cc", references=refs)
    return (lambda: BoundRuns(**cfg)), Loaders(model=toy_loader), f"toy bounds runs (64 particles), {items} seeds"


def timed(exp, executor=None, loaders=None) -> tuple[float, float, int]:
    """(seconds from start to the last record, from the first record to the last, records)."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    run_experiment(exp, ResultFile(None, exp.key_field), executor=executor, loaders=loaders,
                   on_item=lambda rec: stamps.append(time.perf_counter()))
    return stamps[-1] - t0, stamps[-1] - stamps[0], len(stamps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--toy", action="store_true", help="The toy model's bounds runs even when data is present.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import ray

    make, loaders, what = experiment(args.items, args.toy)
    print(f"evaluation: {what}; torch threads per process: 1; cpus: {os.cpu_count()}")
    single = make()
    t = time.perf_counter()
    single.prepare(loaders)
    print(f"single process: model loaded in {time.perf_counter() - t:.1f}s")
    total_1, _, n = timed(single, loaders=loaders)
    rate_1 = n / total_1
    print(f"single process: {n} items in {total_1:.2f}s = {rate_1:.3f} items/s ({total_1 / n * 1000:.0f} ms/item)")

    path = os.pathsep.join(p for p in sys.path if p)
    t = time.perf_counter()
    ray.init(num_cpus=args.workers + 1, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    print(f"ray started in {time.perf_counter() - t:.1f}s")
    scale = Scale(workers=args.workers, threads=1)
    total_w, steady_w, n_w = timed(make(), executor=ray_executor(scale, loaders=loaders))
    rate_w = (n_w - 1) / steady_w if steady_w > 0 else float("nan")
    print(f"{args.workers} workers: {n_w} items, {total_w:.2f}s with actor start and model loading, "
          f"{steady_w:.2f}s from the first record to the last = {rate_w:.3f} items/s")
    noop_n = 200
    total_1n, _, _ = timed(Noop(noop_n))
    total_wn, steady_wn, _ = timed(Noop(noop_n), executor=ray_executor(Scale(workers=1, batch=1)))
    print(f"driver overhead per item: in process {total_1n / noop_n * 1e3:.3f} ms; on Ray (batch 1, one worker) "
          f"{steady_wn / (noop_n - 1) * 1e3:.2f} ms (round trip + append)")
    ray.shutdown()
    print(f"RATIO workers/single throughput = {rate_w / rate_1:.2f}")


if __name__ == "__main__":
    main()
