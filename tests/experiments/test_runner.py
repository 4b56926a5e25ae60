"""The item runner: resume skips finished keys, a failing item keeps what finished, the executor hook, merges."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from hindsight.experiments.runner import Experiment, Loaders, in_process, run_experiment
from hindsight.records.results import ResultFile


@dataclass
class Squares(Experiment):
    """n items; item i's record holds i*i; ``fail_at`` raises on that item; setups are counted."""

    n: int = 4
    fail_at: int | None = None
    ran: list = field(default_factory=list)

    name = "squares"

    def items(self):
        return [{"key": f"k{i}", "i": i} for i in range(self.n)]

    def setup(self, loaders):
        return {"model": loaders.model("m", None)}

    def run_item(self, item):
        if item["i"] == self.fail_at:
            raise RuntimeError(f"item {item['i']} failed")
        self.ran.append(item["key"])
        return {"key": item["key"], "square": item["i"] ** 2, "model": self.parts["model"]}

    def summarise(self, records):
        return {"n": len(records), "total": sum(r["square"] for r in records)}


LOADERS = Loaders(model=lambda name, device: f"loaded {name}")


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_runs_every_item_in_order_and_summarises(tmp_path):
    seen = []
    exp = Squares()
    summary = run_experiment(exp, tmp_path / "r.jsonl", on_item=seen.append, loaders=LOADERS)
    assert summary == {"n": 4, "total": 0 + 1 + 4 + 9}
    assert [r["key"] for r in seen] == ["k0", "k1", "k2", "k3"]
    assert lines(tmp_path / "r.jsonl") == [{"key": f"k{i}", "square": i * i, "model": "loaded m"} for i in range(4)]


def test_resume_skips_the_keys_already_in_the_file(tmp_path):
    path = tmp_path / "r.jsonl"
    run_experiment(Squares(n=2), path, loaders=LOADERS)
    seen, exp = [], Squares(n=4)
    summary = run_experiment(exp, path, on_item=seen.append, loaders=LOADERS)
    assert exp.ran == ["k2", "k3"]  # only the new keys ran
    assert seen[:2] == [None, None] and [r["key"] for r in seen[2:]] == ["k2", "k3"]
    assert summary == {"n": 4, "total": 14} and len(lines(path)) == 4


def test_nothing_is_set_up_when_everything_is_done(tmp_path):
    path = tmp_path / "r.jsonl"
    run_experiment(Squares(n=3), path, loaders=LOADERS)
    exp = Squares(n=3)
    assert run_experiment(exp, path, loaders=Loaders(model=lambda *a: pytest.fail("loaded"))) == \
        {"n": 3, "total": 5}
    assert exp.parts is None


def test_summary_covers_only_this_runs_items(tmp_path):
    path = tmp_path / "r.jsonl"
    run_experiment(Squares(n=4), path, loaders=LOADERS)
    assert run_experiment(Squares(n=2), path, loaders=LOADERS) == {"n": 2, "total": 1}


def test_a_failing_item_keeps_the_finished_records_and_the_rerun_resumes_there(tmp_path):
    path = tmp_path / "r.jsonl"
    with pytest.raises(RuntimeError, match="item 2 failed"):
        run_experiment(Squares(fail_at=2), path, loaders=LOADERS)
    assert [r["key"] for r in lines(path)] == ["k0", "k1"]  # written before the failure
    exp = Squares()
    assert run_experiment(exp, path, loaders=LOADERS)["n"] == 4
    assert exp.ran == ["k2", "k3"]


def test_an_executor_may_run_items_elsewhere_and_out_of_order(tmp_path):
    """The executor gets the config and the pending items; the runner alone writes the file."""
    path = tmp_path / "r.jsonl"
    run_experiment(Squares(n=1), path, loaders=LOADERS)
    calls = []

    def reversed_elsewhere(experiment, items):
        calls.append([it["key"] for it in items])
        remote = Squares.from_config(json.loads(json.dumps(experiment.config())))  # what would travel
        remote.prepare(Loaders(model=lambda name, device: "remote"))
        for item in reversed(items):
            yield item, remote.run_item(item)

    exp = Squares()
    summary = run_experiment(exp, path, executor=reversed_elsewhere)
    assert calls == [["k1", "k2", "k3"]] and exp.parts is None  # nothing was loaded here
    assert [r["key"] for r in lines(path)] == ["k0", "k3", "k2", "k1"]
    assert summary == {"n": 4, "total": 14}
    assert ResultFile(path, "key").get("k3")["model"] == "remote"


def test_in_process_sets_up_once(tmp_path):
    loads = []
    exp = Squares(n=3)
    ex = in_process(Loaders(model=lambda name, device: loads.append(name) or "m"))
    assert [r["square"] for _, r in ex(exp, exp.items())] == [0, 1, 4]
    list(ex(exp, exp.items()))
    assert loads == ["m"]


@dataclass
class Adds(Squares):
    """An experiment that adds fields to a stored record (like a new scorer on old results)."""

    field_name: str = "a"

    def pending(self, item, previous):
        return item if previous is None or self.field_name not in previous else None

    def setup(self, loaders):
        return {}

    def merge(self, previous, record):
        return {**(previous or {}), **record}

    def run_item(self, item):
        return {"key": item["key"], self.field_name: item["i"]}

    def summarise(self, records):
        return records


def test_pending_and_merge_extend_stored_records(tmp_path):
    path = tmp_path / "r.jsonl"
    run_experiment(Adds(n=2, field_name="a"), path)
    records = run_experiment(Adds(n=2, field_name="b"), path)
    assert records == [{"key": "k0", "a": 0, "b": 0}, {"key": "k1", "a": 1, "b": 1}]
    assert run_experiment(Adds(n=2, field_name="b").use(), path) == records  # nothing left to run


def test_a_result_file_with_another_key_is_one_sentence(tmp_path):
    from hindsight.errors import HindsightError

    with pytest.raises(HindsightError, match="keyed by 'id'"):
        run_experiment(Squares(), ResultFile(tmp_path / "r.jsonl", "id"))


def test_pace_is_reported_once_after_the_first_items(tmp_path, monkeypatch):
    """A fake clock: 10 s of set-up in the first item, then 2 s per item; the first item is left out."""
    import hindsight.experiments.runner as runner

    import itertools

    ticks = itertools.chain([0.0], itertools.count(12.0, 2.0))
    monkeypatch.setattr(runner.time, "perf_counter", lambda: next(ticks))
    paces = []
    run_experiment(Squares(n=6), tmp_path / "r.jsonl", loaders=LOADERS, on_pace=paces.append)
    (pace,) = paces
    assert (pace.measured, pace.seconds_per_item, pace.left) == (2, 2.0, 3)
    assert pace.projected_seconds == 6.0 and "2.0 s per item" in pace.text()
    paces.clear()
    run_experiment(Squares(n=7), tmp_path / "r.jsonl", loaders=LOADERS, on_pace=paces.append)
    assert paces == []  # one item left: nothing left to project after it


def test_pace_of_a_batched_run_is_measured_over_whole_chunks(tmp_path, monkeypatch):
    """Chunks of 3 arrive together (14 s of set-up with the first, then 6 s a chunk): 2 s per item, measured
    on the second chunk, never 0 s from the records of one chunk."""
    import itertools

    import hindsight.experiments.runner as runner

    ticks = itertools.chain([0.0, 20.0, 20.0, 20.0, 26.0, 26.0, 26.0], itertools.repeat(32.0))
    monkeypatch.setattr(runner.time, "perf_counter", lambda: next(ticks))
    paces = []
    run_experiment(BatchedSquares(n=9), tmp_path / "r.jsonl", loaders=LOADERS, on_pace=paces.append, batch=3)
    (pace,) = paces
    assert (pace.measured, pace.seconds_per_item, pace.left) == (3, 2.0, 3)


def test_a_failure_record_is_kept_out_of_the_summary_and_retried(tmp_path):
    """An executor that gave up on an item yields ``failure(...)``: appended, skipped by the summary, rerun."""
    from hindsight.experiments.runner import FAILED, failure

    path = tmp_path / "r.jsonl"

    def gives_up_on_k1(experiment, items):
        experiment.prepare(LOADERS)
        for item in items:
            yield item, (failure(experiment, item, "its worker died 3 times") if item["key"] == "k1"
                         else experiment.run_item(item))

    assert run_experiment(Squares(n=3), path, executor=gives_up_on_k1) == {"n": 2, "total": 0 + 4}
    assert lines(path)[1] == {"key": "k1", FAILED: "its worker died 3 times"}
    exp = Squares(n=3)
    assert run_experiment(exp, path, loaders=LOADERS) == {"n": 3, "total": 5} and exp.ran == ["k1"]


def test_a_failure_over_a_stored_record_keeps_it(tmp_path):
    """A scorer added to stored records fails on one item: that item's earlier scores still count."""
    from hindsight.experiments.runner import failure

    path = tmp_path / "r.jsonl"
    run_experiment(Adds(n=2, field_name="a"), path)

    def fails_k0(experiment, items):
        for item in items:
            yield item, (failure(experiment, item, "died") if item["key"] == "k0" else experiment.run_item(item))

    records = run_experiment(Adds(n=2, field_name="b"), path, executor=fails_k0)
    assert records == [{"key": "k0", "a": 0}, {"key": "k1", "a": 1, "b": 1}]
    assert run_experiment(Adds(n=2, field_name="b"), path) == [{"key": "k0", "a": 0, "b": 0},
                                                               {"key": "k1", "a": 1, "b": 1}]


def test_the_runner_closes_the_executor_when_the_run_stops(tmp_path):
    closed = []

    def holds_workers(experiment, items):
        try:
            for item in items:
                yield item, {"key": item["key"], "square": 0}
        finally:
            closed.append(True)

    def stop(rec):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(Squares(n=3), tmp_path / "r.jsonl", executor=holds_workers, on_item=stop)
    assert closed == [True]


@dataclass
class Limited(Squares):
    limit: int | None = None

    def items(self):
        return super().items()[: self.limit]


@pytest.mark.parametrize("limit", [0, -3])
def test_a_limit_below_one_is_refused_when_the_experiment_is_made(limit):
    from hindsight.api import InvalidRequest

    with pytest.raises(InvalidRequest, match=f"limit must be at least 1 \\(got {limit}\\)") as e:
        Limited(limit=limit)
    assert e.value.param == "limit"
    assert Limited(limit=2).limit == 2 and Limited().limit is None


def test_no_items_is_one_sentence_and_writes_nothing(tmp_path):
    from hindsight.errors import HindsightError

    with pytest.raises(HindsightError, match="squares evaluation has no items"):
        run_experiment(Squares(n=0), tmp_path / "r.jsonl", loaders=LOADERS)
    assert not (tmp_path / "r.jsonl").exists()


@dataclass
class BatchedSquares(Squares):
    """Squares whose ``run_batch`` records the chunks it was handed (and checks none runs item by item)."""

    chunks: list = field(default_factory=list)

    def run_batch(self, items):
        self.chunks.append([it["key"] for it in items])
        if any(it["i"] == self.fail_at for it in items):
            raise RuntimeError("chunk failed")
        return [{"key": it["key"], "square": it["i"] ** 2, "model": self.parts["model"]} for it in items]


def test_batch_hands_chunks_to_run_batch_and_writes_each_finished_chunk(tmp_path):
    path, seen = tmp_path / "r.jsonl", []
    exp = BatchedSquares(n=7, fail_at=5)
    with pytest.raises(RuntimeError, match="chunk failed"):
        run_experiment(exp, path, loaders=LOADERS, batch=3, on_item=seen.append)
    assert exp.chunks == [["k0", "k1", "k2"], ["k3", "k4", "k5"]]
    assert [r["key"] for r in lines(path)] == ["k0", "k1", "k2"]  # the first chunk was kept
    again = BatchedSquares(n=7)
    summary = run_experiment(again, path, loaders=LOADERS, batch=3)
    assert again.chunks == [["k3", "k4", "k5"], ["k6"]]  # resumed at the failed chunk; a short last chunk
    assert summary == {"n": 7, "total": sum(i * i for i in range(7))}
    assert lines(path)[3:] == [{"key": f"k{i}", "square": i * i, "model": "loaded m"} for i in range(3, 7)]


def test_batch_default_run_batch_is_run_item_per_item_and_batch_must_be_positive(tmp_path):
    from hindsight.api.errors import InvalidRequest

    exp = Squares(n=5)
    assert run_experiment(exp, tmp_path / "r.jsonl", loaders=LOADERS, batch=2) == {"n": 5, "total": 30}
    assert exp.ran == ["k0", "k1", "k2", "k3", "k4"]
    with pytest.raises(InvalidRequest, match="batch must be at least 1"):
        run_experiment(Squares(n=2), tmp_path / "s.jsonl", loaders=LOADERS, batch=0)


def test_worker_answers_a_call_with_run_batch():
    from hindsight.distributed.worker import Worker

    w = Worker(BatchedSquares, {"n": 4}, 1, LOADERS)
    assert isinstance(w.prepare(), int)
    items = w.experiment.items()
    records, error = w.run(items[:3])
    assert error is None and [r["square"] for r in records] == [0, 1, 4]
    assert w.experiment.chunks == [["k0", "k1", "k2"]]
    w.experiment.fail_at = 3
    records, error = w.run(items[2:])
    assert records == [] and isinstance(error, RuntimeError)
