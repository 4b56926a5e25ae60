"""Continuous batching of plain-sampling requests: one engine thread, one batched forward per step.

Every running request owns ``n`` rows of one :class:`~hindsight.lm.batch.BatchDecoder`. Each step the
thread admits waiting requests (their prompts prefilled together), draws one token per row with each
request's own generator and settings, drops rows that finished or whose client went away, and feeds the
rest in one forward. A request's tokens are those :meth:`LanguageModel.generate` gives for the same seed:
its ``n`` uniforms per step come from its own generator, whatever else shares the batch.

Results go back through ``job.emit`` (called on the engine thread; the server hands it to its event loop).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hindsight.lm.base import LanguageModel
from hindsight.lm.batch import BatchDecoder
from hindsight.lm.sampling import sample_next


class QueueFull(Exception):
    """More requests are waiting than the server accepts; the client should retry later."""


@dataclass
class SampleJob:
    """One sampling request. ``emit`` receives ``("delta", row, text, items)``, ``("end", choices, info)`` or
    ``("error", exception)``; ``items`` are per-token dicts (token text, logprob, top alternatives)."""

    prompt_ids: list[int]
    n: int
    max_tokens: int
    emit: Callable[[tuple], None]
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_logprobs: int = 0
    stream: bool = False
    cancelled: bool = False


class _Running:
    """A job's rows and their progress."""

    def __init__(self, job: SampleJob, rows: list[int], logprobs: torch.Tensor) -> None:
        self.job, self.rows = job, list(rows)
        self.live = [True] * job.n
        self.gen = torch.Generator(device="cpu")
        self.gen.manual_seed(job.seed if job.seed is not None else int(time.time_ns() % (2**31)))
        self.last = logprobs.clone()  # [n, V]; finished rows keep their last row (read, never used)
        self.tokens: list[list[int]] = [[] for _ in range(job.n)]
        self.items: list[list[dict[str, Any]]] = [[] for _ in range(job.n)]
        self.total = [0.0] * job.n
        self.stopped = [False] * job.n
        self.sent = [0] * job.n  # characters of text already streamed per row
        self.steps = 1  # forward passes this request took part in (its prefill included)


class Scheduler:
    """The engine thread. ``submit`` from any thread; ``cancel`` drops a job's rows at the next step."""

    def __init__(self, lm: LanguageModel, *, max_batch_rows: int = 64, max_queue: int = 64,
                 metrics: Any = None) -> None:
        self.lm = lm
        self.max_batch_rows, self.max_queue = max_batch_rows, max_queue
        self.metrics = metrics
        self.decoder = BatchDecoder(lm)
        self.waiting: collections.deque[SampleJob] = collections.deque()
        self.running: list[_Running] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="hindsight-batch", daemon=True)
        self.steps = 0

    # ---- control ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is running and waiting, then end the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def submit(self, job: SampleJob) -> None:
        with self._cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull()
            self.waiting.append(job)
            self._cond.notify_all()

    def cancel(self, job: SampleJob) -> None:
        job.cancelled = True

    @property
    def active_rows(self) -> int:
        return self.decoder.size

    # ---- the loop -----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self.waiting and not self.running and not self._stop:
                    self._cond.wait(0.5)
                if self._stop and not self.waiting and not self.running:
                    return
            try:
                self._admit()
                self._step()
            except Exception as e:  # noqa: BLE001 - a fault fails the running requests, never the server
                for r in self.running:
                    r.job.emit(("error", e))
                self.decoder.drop(list(self.decoder.ids))
                self.running = []

    def _admit(self) -> None:
        jobs = []
        with self._cond:
            rows = self.decoder.size
            while self.waiting and (rows + self.waiting[0].n <= self.max_batch_rows or not (rows or jobs)):
                job = self.waiting.popleft()
                if not job.cancelled:
                    jobs.append(job)
                    rows += job.n
        if not jobs:
            return
        try:
            groups = self.decoder.add([j.prompt_ids for j in jobs], [j.n for j in jobs])
        except Exception as e:  # noqa: BLE001 - e.g. a prompt too long: those jobs fail, the batch goes on
            for j in jobs:
                j.emit(("error", e))
            return
        self._count_forward()
        for job, ids in zip(jobs, groups):
            self.running.append(_Running(job, ids, self.decoder.rows_logprobs(ids)))

    def _count_forward(self) -> None:
        self.steps += 1
        if self.metrics is not None:
            self.metrics.forward_passes.inc()

    def _step(self) -> None:
        feed: dict[int, int] = {}
        finished: list[int] = []
        still: list[_Running] = []
        for r in self.running:
            if r.job.cancelled:
                finished.extend(row for row, live in zip(r.rows, r.live) if live)
                continue
            toks = sample_next(r.last, temperature=r.job.temperature, top_p=r.job.top_p, top_k=r.job.top_k,
                               generator=r.gen).tolist()
            for i, tok in enumerate(toks):
                if not r.live[i]:
                    continue
                if self._advance(r, i, tok):
                    feed[r.rows[i]] = tok
                else:
                    r.live[i] = False
                    finished.append(r.rows[i])
            if any(r.live):
                still.append(r)
            else:
                self._finish(r)
        self.running = still
        self.decoder.drop(finished)
        if not feed:
            return
        lp = self.decoder.step([feed[row] for row in self.decoder.ids])
        self._count_forward()
        where = {row: k for k, row in enumerate(self.decoder.ids)}
        for r in self.running:
            r.steps += 1
            for i, row in enumerate(r.rows):
                if r.live[i]:
                    r.last[i] = lp[where[row]]

    def _advance(self, r: _Running, i: int, tok: int) -> bool:
        """Record row ``i``'s new token; whether the row goes on."""
        lm, job = self.lm, r.job
        lp_row = r.last[i]
        r.total[i] += float(lp_row[tok])
        r.tokens[i].append(tok)
        eos = tok in lm.eos_token_ids
        if not eos:
            top = []
            if job.top_logprobs:
                vals, idx = torch.topk(lp_row, job.top_logprobs)
                top = [(lm.decode([int(t)]), float(v)) for v, t in zip(vals, idx)]
            r.items[i].append({"token": lm.decode([tok]), "logprob": float(lp_row[tok]), "top": top})
        text = lm.decode(r.tokens[i])
        if job.stop and not eos and any(s in text for s in job.stop):
            r.stopped[i] = True
        going = not (eos or r.stopped[i] or len(r.tokens[i]) >= job.max_tokens)
        if job.stream and going:
            hold = max((len(s) for s in job.stop), default=1) - 1
            upto = len(text) - hold
            while upto > r.sent[i] and text[upto - 1] == "\ufffd":  # an incomplete character: wait for more
                upto -= 1
            if upto > r.sent[i]:
                job.emit(("delta", i, text[r.sent[i]:upto], None))
                r.sent[i] = upto
        return going

    def _finish(self, r: _Running) -> None:
        lm, job = self.lm, r.job
        choices = []
        for i in range(job.n):
            s = lm._finish(r.tokens[i], r.total[i], r.stopped[i], job.stop)
            body = [t for t in s.tokens if t not in lm.eos_token_ids]
            choices.append({"text": s.text, "tokens": body, "logprob": s.logprob,
                            "finish_reason": "length" if s.finish_reason == "length" else "stop",
                            "items": r.items[i][:len(body)], "sent": r.sent[i]})
            if self.metrics is not None:
                self.metrics.tokens_out.inc(len(body))
        job.emit(("end", choices, {"forward_passes": r.steps}))
