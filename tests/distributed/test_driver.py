"""The driver's bookkeeping (batches, actor deaths, replacement, retry limit, errors) against a fake in-process
``ray`` module: fast, deterministic, and independent of whether a real Ray can start on this machine."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import pytest

from hindsight.distributed import Scale, ray_executor
from hindsight.errors import HindsightError
from hindsight.experiments.runner import FAILED, Experiment, run_experiment


class ActorDied(Exception):
    pass


class Crash(BaseException):
    """Raised by an experiment to stand for its process dying (a BaseException: the worker does not catch it)."""


class FakeActor:
    def __init__(self, cls, args):
        self.obj, self.dead = cls(*args), False

    def __getattr__(self, name):
        method = getattr(self.obj, name)
        return types.SimpleNamespace(remote=lambda *a: FakeRef(self, method, a))


class FakeRef:
    def __init__(self, actor, method, args):
        self.actor, self.method, self.args = actor, method, args

    def resolve(self):
        if self.actor.dead:
            raise ActorDied("The actor is dead because it was killed by `ray.kill`.")
        try:
            return self.method(*self.args)
        except Crash:
            self.actor.dead = True
            raise ActorDied("Worker exit type: SYSTEM_ERROR") from None


class FakeRay(types.ModuleType):
    """Just what the executor calls; calls run when the driver collects them, in the order they were sent."""

    def __init__(self):
        super().__init__("ray")
        self.exceptions = types.SimpleNamespace(RayActorError=ActorDied)
        self.started = 0

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return {"CPU": 2.0}

    def remote(self, **options):
        return lambda cls: types.SimpleNamespace(remote=lambda *args: FakeActor(cls, args))

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:1], refs[1:]

    def get(self, ref):
        return ref.resolve()

    def kill(self, actor, no_restart=True):
        actor.dead = True


@pytest.fixture
def fake_ray(monkeypatch):
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    return fake


@dataclass
class Items(Experiment):
    n: int = 6
    crash_at: int | None = None  # this item "kills its process"
    raise_at: int | None = None  # this item raises an ordinary error
    bad_setup: bool = False

    name = "items"

    def items(self):
        return [{"key": f"k{i}", "i": i} for i in range(self.n)]

    def setup(self, loaders):
        if self.bad_setup:
            raise HindsightError("no such model")
        return {}

    def run_item(self, item):
        if item["i"] == self.crash_at:
            raise Crash
        if item["i"] == self.raise_at:
            raise ValueError(f"item {item['i']} is bad")
        return {"key": item["key"], "v": item["i"]}

    def summarise(self, records):
        return sorted(r["v"] for r in records)


def keys(path):
    return [json.loads(x)["key"] for x in path.read_text().splitlines()]


def test_every_item_once_and_actors_stopped(fake_ray, tmp_path):
    ex = ray_executor(Scale(workers=2, batch=2))
    alive = []
    ex.on_status = lambda a, n: alive.append((a, n))
    assert run_experiment(Items(n=7), tmp_path / "r.jsonl", executor=ex) == list(range(7))
    assert sorted(keys(tmp_path / "r.jsonl")) == sorted(f"k{i}" for i in range(7))
    assert ex.actors == [] and alive[-1] == (2, 2)


def test_a_killed_actor_has_its_items_resent_and_is_replaced(fake_ray, tmp_path):
    ex = ray_executor(Scale(workers=2))
    killed = []

    def kill_first(rec):
        if not killed:
            killed.append(ex.actors[0])
            fake_ray.kill(ex.actors[0])

    assert run_experiment(Items(n=8), tmp_path / "r.jsonl", executor=ex, on_item=kill_first) == list(range(8))
    assert sorted(keys(tmp_path / "r.jsonl")) == sorted(f"k{i}" for i in range(8))  # nothing lost or doubled
    assert ex.replaced == 1


def test_an_item_that_keeps_killing_its_actor_is_recorded_failed(fake_ray, tmp_path):
    path = tmp_path / "r.jsonl"
    ex = ray_executor(Scale(workers=2, retries=2))
    assert run_experiment(Items(n=5, crash_at=2), path, executor=ex) == [0, 1, 3, 4]
    records = [json.loads(x) for x in path.read_text().splitlines()]
    failed = [r for r in records if FAILED in r]
    assert [r["key"] for r in failed] == ["k2"] and "died 3 times" in failed[0][FAILED]
    assert ex.replaced == 3 and sorted(r["key"] for r in records) == sorted(f"k{i}" for i in range(5))
    assert run_experiment(Items(n=5), path, executor=ray_executor(Scale(workers=2))) == list(range(5))


def test_an_error_in_an_item_or_in_setup_is_raised_as_in_one_process(fake_ray, tmp_path):
    with pytest.raises(ValueError, match="item 1 is bad"):
        run_experiment(Items(n=3, raise_at=1), tmp_path / "a.jsonl", executor=ray_executor(Scale(workers=1, batch=3)))
    assert keys(tmp_path / "a.jsonl") == ["k0"]  # finished before it: kept
    with pytest.raises(HindsightError, match="no such model"):
        run_experiment(Items(bad_setup=True), tmp_path / "b.jsonl", executor=ray_executor(Scale(workers=2)))


def test_a_worker_that_dies_while_loading_is_given_up_after_the_retries(fake_ray, tmp_path, monkeypatch):
    from hindsight.distributed import worker

    monkeypatch.setattr(worker.Worker, "prepare", lambda self: (_ for _ in ()).throw(Crash()))
    with pytest.raises(HindsightError, match="Every Ray worker died while loading"):
        run_experiment(Items(n=2), tmp_path / "r.jsonl", executor=ray_executor(Scale(workers=2, retries=1)))
