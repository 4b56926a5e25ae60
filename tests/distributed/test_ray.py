"""The item runner on a real local Ray (2 CPUs, no dashboard, started once for the module): the same records as
one process, nothing lost or doubled when an actor is killed, failures recorded and retried, interrupted runs
that resume."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'hindsight[ray]')")

from hindsight.distributed import Scale, ray_executor  # noqa: E402
from hindsight.experiments.bounds import BoundRuns, rejection_samples  # noqa: E402
from hindsight.experiments.runner import FAILED, Experiment, Loaders, run_experiment  # noqa: E402
from hindsight.records.results import ResultFile  # noqa: E402
from tests.toy_task import T, one_thread, toy_task  # noqa: E402,F401


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module; the executor joins it (and leaves it running) instead of starting its own."""
    path = os.pathsep.join(p for p in sys.path if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    except Exception as e:  # noqa: BLE001 - e.g. its agents too slow to start on an overloaded machine
        ray.shutdown()
        pytest.skip(f"a local Ray could not start here: {str(e).splitlines()[0]}")
    yield
    ray.shutdown()


@dataclass
class Slow(Experiment):
    """n items, each taking ``delay`` seconds; item 1 kills its process while ``crash_file`` exists."""

    n: int = 6
    delay: float = 0.2
    crash_file: str | None = None

    name = "slow"

    def items(self):
        return [{"key": f"k{i}", "i": i} for i in range(self.n)]

    def setup(self, loaders):
        return {"pid": os.getpid()}

    def run_item(self, item):
        if self.crash_file and os.path.exists(self.crash_file) and item["i"] == 1:
            os._exit(3)
        time.sleep(self.delay)
        return {"key": item["key"], "value": item["i"] * 10, "pid": self.parts["pid"]}

    def summarise(self, records):
        return {"n": len(records), "total": sum(r["value"] for r in records)}


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def toy_loader(name, device):
    from hindsight.lm.toy import toy_model

    return toy_model()


def test_two_workers_write_the_records_one_process_writes(toy_task, tmp_path):
    """BoundRuns rebuilt on each worker from its config (toy model, prompt ids, regex potential): same seeds,
    same records, item for item."""
    lm, prompt, pot, _ = toy_task
    refs, _ = rejection_samples(lm, prompt, pot, 3, T, seed=0)
    config = dict(samplers=["bootstrap"], particles=[2, 4], seeds=3, max_tokens=T, tag="t", prompt=list(prompt),
                  raw=True, potential="regex:cc", references=refs)
    single = run_experiment(BoundRuns(**config), tmp_path / "one.jsonl", loaders=Loaders(model=toy_loader))
    ex = ray_executor(Scale(workers=2), loaders=Loaders(model=toy_loader))
    spread = run_experiment(BoundRuns(**config), tmp_path / "two.jsonl", executor=ex)
    one, two = lines(tmp_path / "one.jsonl"), lines(tmp_path / "two.jsonl")
    assert len(one) == 6 and sorted(one, key=lambda r: r["id"]) == sorted(two, key=lambda r: r["id"])
    assert [r.lower.values for r in single] == [r.lower.values for r in spread]
    assert ex.actors == [] and ex.replaced == 0  # stopped after the run


def test_a_killed_actor_loses_and_doubles_nothing(tmp_path):
    path = tmp_path / "r.jsonl"
    ex = ray_executor(Scale(workers=2))
    killed = []

    def on_item(rec):
        if not killed:
            killed.append(ex.actors[0])
            ray.kill(ex.actors[0], no_restart=True)

    summary = run_experiment(Slow(n=8), path, on_item=on_item, executor=ex)
    keys = [r["key"] for r in lines(path)]
    assert sorted(keys) == sorted(f"k{i}" for i in range(8))  # each item exactly once
    assert not any(FAILED in r for r in lines(path))
    assert summary == {"n": 8, "total": 280} and ex.replaced == 1


def test_an_item_whose_worker_keeps_dying_is_recorded_failed_and_retried_next_run(tmp_path):
    path, crash = tmp_path / "r.jsonl", tmp_path / "crash"
    crash.write_text("")
    exp = Slow(n=4, delay=0.0, crash_file=str(crash))
    summary = run_experiment(exp, path, executor=ray_executor(Scale(workers=2, retries=1)))
    failed = [r for r in lines(path) if FAILED in r]
    assert [r["key"] for r in failed] == ["k1"] and "died 2 times" in failed[0][FAILED]
    assert summary == {"n": 3, "total": 0 + 20 + 30}  # the failure is left out of the summary
    crash.unlink()
    seen = []
    summary = run_experiment(Slow(n=4, delay=0.0, crash_file=str(crash)), path, on_item=seen.append,
                             executor=ray_executor(Scale(workers=2)))
    assert [r["key"] for r in seen if r is not None] == ["k1"]  # only the failed item ran again
    assert summary == {"n": 4, "total": 60} and ResultFile(path, "key").get("k1")["value"] == 10


def test_an_interrupted_run_stops_its_workers_and_the_rerun_completes_each_item_once(tmp_path):
    path = tmp_path / "r.jsonl"
    ex = ray_executor(Scale(workers=2))
    done = []

    def interrupt(rec):
        done.append(rec)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(Slow(n=6), path, on_item=interrupt, executor=ex)
    assert len(lines(path)) == 2 and ex.actors == []  # the two records kept, the workers stopped
    summary = run_experiment(Slow(n=6), path, executor=ray_executor(Scale(workers=2)))
    keys = [r["key"] for r in lines(path)]
    assert sorted(keys) == sorted(f"k{i}" for i in range(6)) and summary["n"] == 6


def test_an_error_in_an_item_is_raised_as_in_one_process(tmp_path):
    from hindsight.errors import HindsightError

    @dataclass
    class Bad(Slow):
        def run_item(self, item):
            if item["i"] == 2:
                raise HindsightError("item 2 is bad")
            return Slow.run_item(self, item)

    with pytest.raises(HindsightError, match="item 2 is bad"):
        run_experiment(Bad(n=3, delay=0.0), tmp_path / "r.jsonl", executor=ray_executor(Scale(workers=1, batch=3)))
    assert [r["key"] for r in lines(tmp_path / "r.jsonl")] == ["k0", "k1"]  # finished before it: kept
