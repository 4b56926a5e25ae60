"""An executor for the item runner that runs items on Ray actors, local or on a cluster.

The driver (the process that called ``run_experiment``) keeps the queue of pending items and the result file;
N actors each rebuild the experiment from ``config()``, load its models once and answer small batches of
items. Records are yielded as they come back, in any order, and the runner appends them. When an actor dies
(killed, out of memory, its machine gone) the items it held go back to the front of the queue and the actor
is replaced; an item whose actors died ``retries + 1`` times is yielded as a failure record (the run goes on,
the summary skips it, the next run retries it). Whatever way the run ends, the actors are stopped, and a Ray
started for the run is shut down.
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hindsight.distributed.options import Scale, require_ray
from hindsight.distributed.worker import Worker
from hindsight.errors import HindsightError
from hindsight.experiments.runner import Experiment, Item, Loaders, Record, failure

Status = Callable[[int, int], None]  # (workers alive, workers asked for)


class RayExecutor:
    """``executor(experiment, items)`` for :func:`~hindsight.experiments.runner.run_experiment` on Ray actors.

    ``actors`` holds the live actor handles while a run is going (tests kill them); ``replaced`` counts the
    actors that died and were replaced; ``on_status(alive, workers)`` hears each change in live workers.
    """

    def __init__(self, scale: Scale, *, loaders: Loaders | None = None, on_status: Status | None = None) -> None:
        scale.check()
        self.scale, self.loaders = scale, loaders
        self.on_status = on_status or (lambda alive, workers: None)
        self.actors: list[Any] = []  # None where a slot was given up
        self.replaced = 0
        self.workers = 0

    def __call__(self, experiment: Experiment, items: Sequence[Item]) -> Iterator[tuple[Item, Record]]:
        ray = require_ray()
        started = self._connect(ray)
        try:
            self.workers = self._fit(ray)
            yield from _Run(self, ray, experiment, items).records()
        finally:
            for actor in self.actors:
                if actor is not None:
                    ray.kill(actor, no_restart=True)
            self.actors = []
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join the running Ray (this process's, or ``address``) or start a local one; True if started here."""
        if ray.is_initialized():
            return False
        try:
            if self.scale.address:
                ray.init(address=self.scale.address, logging_level="ERROR", log_to_driver=False)
                return False
            cpus = max(1, math.ceil((self.scale.workers or 1) * self.scale.cpus_per_worker))
            path = os.pathsep.join(p for p in sys.path if p)  # the workers import what this process imports
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception when its node times out starting
            where = f"the Ray cluster at {self.scale.address}" if self.scale.address else "a local Ray"
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise HindsightError(f"Could not start or join {where}: {first}") from None
        return True

    def _fit(self, ray: Any) -> int:
        """The number of actors to start: as asked, or as many as the cluster's resources fit."""
        have = ray.cluster_resources()
        s = self.scale
        fits = [int(have.get("CPU", 0) // s.cpus_per_worker)]
        if s.gpus_per_worker > 0:
            if have.get("GPU", 0) < s.gpus_per_worker:
                raise HindsightError(f"--gpus-per-worker {s.gpus_per_worker:g} asks for GPUs, but the Ray cluster has "
                                     f"{have.get('GPU', 0):g}.")
            fits.append(int(have["GPU"] // s.gpus_per_worker))
        if min(fits) < 1:
            raise HindsightError(f"The Ray cluster has {have.get('CPU', 0):g} CPUs; a worker needs "
                                 f"{s.cpus_per_worker:g}.")
        return s.workers or min(fits)


class _Run:
    """One executor call: the queue, the actors (one slot each) and the calls in flight."""

    def __init__(self, ex: RayExecutor, ray: Any, experiment: Experiment, items: Sequence[Item]) -> None:
        s = ex.scale
        self.ex, self.ray, self.exp, self.s = ex, ray, experiment, s
        self.actor_class = ray.remote(num_cpus=s.cpus_per_worker, num_gpus=s.gpus_per_worker or None,
                                      max_restarts=0, max_task_retries=0)(Worker)
        self.config = experiment.config()
        self.queue: deque[Item] = deque(items)
        self.deaths: Counter[str] = Counter()  # item key -> actors that died holding it
        self.calls: dict[Any, tuple[int, int, list[Item] | None, int]] = {}  # ref -> (slot, generation, batch
        # or None for the model loading, sequence number)
        self.sent = 0
        self.running: dict[tuple[int, int], int] = {}  # (slot, generation) of a dead actor -> the call it was running
        self.generation: list[int] = []
        self.ready: set[int] = set()  # slots whose actor has loaded its models
        self.load_deaths: Counter[int] = Counter()  # slot -> actors that died while loading, in a row

    def spawn(self, slot: int) -> None:
        """Start (or replace) the actor of ``slot`` and ask it to load its models."""
        actor = self.actor_class.remote(type(self.exp), self.config, self.s.threads, self.ex.loaders)
        if slot == len(self.generation):
            self.generation.append(0)
            self.ex.actors.append(actor)
        else:
            self.generation[slot] += 1
            self.ex.actors[slot] = actor
        self.submit(slot, actor.prepare.remote(), None)

    def fill(self) -> None:
        """Keep ``in_flight`` batches queued on every live actor."""
        busy = Counter(slot for slot, _, batch, _ in self.calls.values() if batch is not None)
        for slot, actor in enumerate(self.ex.actors):
            while self.queue and actor is not None and busy[slot] < self.s.in_flight:
                batch = [self.queue.popleft() for _ in range(min(self.s.batch, len(self.queue)))]
                self.submit(slot, actor.run.remote(batch), batch)
                busy[slot] += 1

    def submit(self, slot: int, ref: Any, batch: list[Item] | None) -> None:
        self.sent += 1
        self.calls[ref] = (slot, self.generation[slot], batch, self.sent)

    def status(self) -> None:
        self.ex.on_status(len(self.ready), self.ex.workers)

    def records(self) -> Iterator[tuple[Item, Record]]:
        for slot in range(self.ex.workers):
            self.spawn(slot)
        while self.queue or any(batch is not None for _, _, batch, _ in self.calls.values()):
            self.fill()
            if not self.calls:
                raise HindsightError("Every Ray worker died while loading its models; see the Ray logs "
                                     "(/tmp/ray/session_latest/logs).")
            done, _ = self.ray.wait(list(self.calls), num_returns=1, timeout=0.5)  # short: Ctrl-C gets through
            for ref in done:
                slot, gen, batch, seq = self.calls.pop(ref)
                try:
                    answer = self.ray.get(ref)
                except self.ray.exceptions.RayActorError as e:
                    yield from self.died(slot, gen, batch, seq, e)
                    continue
                yield from self.answered(slot, batch, answer)

    def answered(self, slot: int, batch: list[Item] | None, answer: Any) -> Iterator[tuple[Item, Record]]:
        if batch is None:  # the actor finished loading (its pid) or could not (the exception)
            if isinstance(answer, BaseException):
                raise answer
            self.ready.add(slot)
            self.load_deaths[slot] = 0
            self.status()
            return
        records, error = answer
        yield from zip(batch, records)
        if error is not None:
            raise error

    def died(self, slot: int, gen: int, batch: list[Item] | None, seq: int, e: Exception
             ) -> Iterator[tuple[Item, Record]]:
        """An actor died: replace it (once per death) and re-queue its items. The death counts against the
        items of the call it was running (its oldest), not those queued behind; past the retries they fail."""
        reason = _reason(e)
        if gen == self.generation[slot]:
            self.running[slot, gen] = min([seq] + [q for s, g, _, q in self.calls.values() if (s, g) == (slot, gen)])
            self.load_deaths[slot] += slot not in self.ready  # it died before it had loaded its models
            self.ready.discard(slot)
            if self.load_deaths[slot] > self.s.retries:
                self.ex.actors[slot] = None  # this slot keeps dying while loading: give it up
            else:
                self.ex.replaced += 1
                self.spawn(slot)
            self.status()
        charged = self.running.get((slot, gen)) == seq
        for item in reversed(batch or []):
            key = self.exp.key(item)
            self.deaths[key] += charged
            if self.deaths[key] > self.s.retries:
                yield item, failure(self.exp, item, f"its worker died {self.deaths[key]} times ({reason})")
            else:
                self.queue.appendleft(item)


def _reason(e: Exception) -> str:
    """The last line of Ray's account of an actor death (what killed it), kept short."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]

