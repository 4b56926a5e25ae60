"""One item runner for every experiment: resume from the result file, progress, one record per item, summary.

An experiment is an object with a plain JSON-able ``config()``, a list of ``items()`` (each with a unique key),
``setup(loaders)`` that loads its models once, ``run_item(item) -> record`` (pure once set up) and
``summarise(records)``. The runner alone touches the result file: it asks the experiment which items still need
work, hands those to an *executor* and appends each record as it comes back. The default executor runs the
items in this process, in order; another one (issue 14: Ray actors) may run them elsewhere and yield records
in any order, because nothing but ``config()`` and the items has to travel.
"""

from __future__ import annotations

import dataclasses
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hindsight.errors import HindsightError
from hindsight.lm.base import LanguageModel
from hindsight.records.results import ResultFile

Item = dict[str, Any]
Record = dict[str, Any]
OnItem = Callable[[Record | None], None]  # called once per item: None for an item resumed from the file
FAILED = "failed"  # a record with this field is an item an executor gave up on (the reason); reruns retry it


def _load_model(name: str | None, device: str | None) -> LanguageModel:
    from hindsight.lm import load_model

    return load_model(name, device=device)


_RUNTIMES: dict[str | None, Any] = {}  # one per device in this process (a worker's scorers share its models)


def _load_scorer(name: str, model: str | None, reverse_model: str | None, device: str | None, task: str):
    """A TRLM pair scorer, loaded the one way every command loads it (the api's runtime); scorers on the same
    model share one copy of it."""
    from hindsight.api import Runtime

    if device not in _RUNTIMES:
        _RUNTIMES[device] = Runtime(device=device)
    return _RUNTIMES[device].scorer(name, task, model, reverse_model)


def _load_reverse(spec: str, device: str | None):
    from hindsight.reverse.models import load_reverse_model

    return load_reverse_model(spec, device=device)


@dataclass
class Loaders:
    """How ``setup`` obtains models: the CLI passes its own (with progress on stderr), a worker the defaults."""

    model: Callable[[str | None, str | None], LanguageModel] = field(default=_load_model)
    scorer: Callable[..., Any] = field(default=_load_scorer)
    reverse: Callable[[str, str | None], Any] = field(default=_load_reverse)


class Experiment(ABC):
    """One evaluation: its items, how to run one, and how to summarise the records.

    Subclasses are dataclasses whose fields are the config; ``parts`` holds what ``setup`` loaded.
    """

    name: str = "experiment"
    key_field: str = "key"
    provenance_ignores: tuple[str, ...] = ()  # config fields that never change a record (see ``provenance``)
    parts: dict[str, Any] | None = None  # what setup loaded (models, scorers ...): never part of the config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Experiment:
        """The same experiment rebuilt from ``config()`` (in another process, say)."""
        return cls(**config)

    def __post_init__(self) -> None:
        """Settings checked when the experiment is made (before any data or model is touched)."""
        from hindsight.api import checks

        checks.limit(getattr(self, "limit", None))

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this experiment elsewhere, JSON-able (the dataclass fields by default)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def prepare(self, loaders: Loaders | None = None) -> None:
        """``setup`` once: later calls, and experiments given their parts with ``use``, load nothing."""
        if self.parts is None:
            self.parts = self.setup(loaders or Loaders())

    def use(self, **parts: Any) -> Experiment:
        """Run with parts already loaded (the models a caller holds, stubs in tests) instead of ``setup``."""
        self.parts = parts
        return self

    @abstractmethod
    def items(self) -> list[Item]:
        """The work, in order; each item carries its unique key under ``key_field``."""

    @abstractmethod
    def setup(self, loaders: Loaders) -> dict[str, Any]:
        """Load what ``run_item`` needs (models, scorers ...) and return it; ``prepare`` stores it in ``parts``."""

    @abstractmethod
    def run_item(self, item: Item) -> Record:
        """The record of one item (a function of the item once set up)."""

    def run_batch(self, items: Sequence[Item]) -> list[Record]:
        """The records of several items, in order (default: ``run_item`` of each). Experiments whose items can
        share forwards (RAIN's searches) override it; each record must equal the one ``run_item`` gives."""
        return [self.run_item(item) for item in items]

    def run_stream(self, items: Sequence[Item], width: int) -> Iterator[tuple[int, Record]]:
        """(index in ``items``, record) of each item as it is done, with at most ``width`` items in progress.

        Default: chunks of ``width`` items through ``run_batch``, each chunk's records when it is done. RAIN's
        evaluations override it: a finished search's place goes to the next item at once, so a chunk's slowest
        search does not hold the others back and each record is written as soon as its item is done."""
        for at in range(0, len(items), width):
            chunk = list(items[at: at + width])
            records = self.run_batch(chunk)
            if len(records) != len(chunk):
                raise HindsightError(f"{self.name}: run_batch returned {len(records)} records for "
                                     f"{len(chunk)} items.")
            yield from zip(range(at, at + len(chunk)), records)

    @abstractmethod
    def summarise(self, records: list[Record]) -> Any:
        """The numbers reported for ``records`` (those of ``items()``, in item order), with intervals."""

    def key(self, item: Item) -> str:
        return str(item[self.key_field])

    def pending(self, item: Item, previous: Record | None) -> Item | None:
        """The work left for ``item`` given its stored record (None: nothing). Default: run it unless stored."""
        return item if previous is None else None

    def merge(self, previous: Record | None, record: Record) -> Record:
        """The record to append, given the stored one (for experiments that add to a record)."""
        return record


@dataclass
class ModelExperiment(Experiment):
    """An experiment over a forward model and, optionally, a reverse-trained one (TRLM-Ba / -FoBa)."""

    model: str | None = None
    reverse_model: str | None = None
    device: str | None = None

    def load_models(self, loaders: Loaders) -> tuple[LanguageModel, Any]:
        """The forward model and the reverse one (a ``ReverseModel``; None when not configured)."""
        rev = loaders.reverse(self.reverse_model, self.device) if self.reverse_model else None
        return loaders.model(self.model, self.device), rev


Executor = Callable[[Experiment, Sequence[Item]], Iterator[tuple[Item, Record]]]


def in_process(loaders: Loaders | None = None, batch: int = 1) -> Executor:
    """The default executor: set the experiment up here, then run the items in order, ``batch`` at a time.

    With ``batch > 1`` up to ``batch`` pending items are in progress together (``Experiment.run_stream``: by
    default chunks through ``run_batch``, whose records come back when the chunk is done; RAIN's evaluations
    return each record as soon as its item is done). An interruption loses at most the items in progress.
    """
    from hindsight.api.checks import at_least

    at_least("batch", batch, 1)

    def execute(experiment: Experiment, items: Sequence[Item]) -> Iterator[tuple[Item, Record]]:
        experiment.prepare(loaders)
        items = list(items)
        for i, record in experiment.run_stream(items, batch):
            yield items[i], record

    return execute


def failure(experiment: Experiment, item: Item, reason: str) -> Record:
    """The record of an item that could not be run (its worker kept dying): summaries skip it, reruns retry it."""
    return {experiment.key_field: item[experiment.key_field], FAILED: reason}


def usable(record: Record | None) -> Record | None:
    """The stored record as experiments see it: a failure stands for the record it was appended over."""
    if record is None or FAILED not in record:
        return record
    return record.get("before")


def completed(experiment: Experiment, results: ResultFile, items: Sequence[Item]) -> list[Record]:
    """The usable records of ``items`` in ``results``, in item order (missing and failed ones left out)."""
    stored = (usable(r) for r in results.select(experiment.key(it) for it in items))
    return [r for r in stored if r is not None]


def _record(experiment: Experiment, previous: Record | None, record: Record) -> Record:
    """What to append for ``record``: merged with the usable stored record, or a failure that keeps it."""
    if FAILED in record:
        return record if previous is None else {**record, "before": previous}
    return experiment.merge(previous, record)


def open_results(experiment: Experiment, results: ResultFile | str | Path) -> ResultFile:
    """The experiment's result file (opened by path, keyed by the experiment's ``key_field``)."""
    if not isinstance(results, ResultFile):
        return ResultFile(results, experiment.key_field)
    if results.key_field != experiment.key_field:
        raise HindsightError(f"{results.path} is keyed by {results.key_field!r}, but the {experiment.name} "
                             f"experiment keys its records by {experiment.key_field!r}.")
    return results


@dataclass
class Pace:
    """What the items computed so far cost: seconds per item and the projected time for those left.

    The first item is left out of the rate when there are more (it pays for loading the models).
    """

    measured: int
    seconds_per_item: float
    left: int

    @property
    def projected_seconds(self) -> float:
        return self.left * self.seconds_per_item

    def text(self) -> str:
        mins = self.projected_seconds / 60
        return (f"cost: {self.seconds_per_item:.1f} s per item (measured on {self.measured}); "
                f"about {mins:.0f} min for the {self.left} item(s) left" if mins >= 1 else
                f"cost: {self.seconds_per_item:.1f} s per item (measured on {self.measured}); "
                f"about {self.projected_seconds:.0f} s for the {self.left} item(s) left")


def weights_fingerprint(name_or_path: str | None) -> str:
    """A content hash of a model's weights (recorded checksums for cached models, sampled hashes for folders)."""
    from hindsight.lm import checksums, registry

    try:
        name, path = registry.resolve(name_or_path)
    except HindsightError:
        path = Path(str(name_or_path)).expanduser()
        if not path.is_dir():
            raise
        return checksums.folder_fingerprint(path)
    return registry.fingerprint(name, path)


NEUTRAL = ("data", "limit", "device", "model", "reverse_model")  # which items run and where; models are stamped apart


def provenance(experiment: Experiment) -> dict[str, Any] | None:
    """What produced an experiment's records: each model it names with the fingerprint of its weights, and the
    settings that change a record (the config less :data:`NEUTRAL` and the experiment's ``provenance_ignores``:
    prompt variants, scorer settings, max words, max tokens, seeds ...).

    Records carry it (``produced_by``), so a rerun on the same ``--out`` with another ``--model``, retrained
    weights under the same path, or a setting that changes scores is refused instead of reusing the first
    run's records under the new label.
    """
    stamp: dict[str, Any] = {}
    for field_name in ("model", "reverse_model"):
        if not hasattr(experiment, field_name):
            continue
        value = getattr(experiment, field_name)
        if value is None and field_name == "reverse_model":
            stamp[field_name] = None
            continue
        stamp[field_name] = value or "default"
        stamp[f"{field_name}_weights"] = weights_fingerprint(value)
    if not stamp:
        return None  # an experiment that runs no model (a test's, say) has nothing to stamp
    skip = set(NEUTRAL) | set(getattr(experiment, "provenance_ignores", ()))
    settings = {k: v for k, v in experiment.config().items() if k not in skip}
    if settings:
        stamp["settings"] = json.loads(json.dumps(settings, sort_keys=True, default=str))
    return stamp


def _difference(stamp: dict[str, Any], theirs: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first thing two stamps disagree on, as (name, theirs, ours). Only what both recorded is compared
    (a record written before a setting was stamped is accepted); a model is compared by its weights when both
    have them, so the same weights under another name or path are the same model."""
    ours_s, theirs_s = stamp.get("settings") or {}, theirs.get("settings") or {}
    pairs = [(k, theirs.get(k), stamp.get(k)) for k in sorted(set(stamp) & set(theirs)) if k != "settings"]
    pairs = [(k, t, o) for k, t, o in pairs if not (k in ("model", "reverse_model") and f"{k}_weights" in stamp
                                                     and f"{k}_weights" in theirs and t is not None and o is not None)]
    pairs += [(k, theirs_s[k], ours_s[k]) for k in sorted(set(ours_s) & set(theirs_s))]
    return next(((k, t, o) for k, t, o in pairs if t != o), None)


def check_provenance(results: ResultFile, stamp: dict[str, Any], keys: Iterable[str] | None = None) -> None:
    """One sentence if the records of ``keys`` (default: every record) in ``results`` were produced by other
    models, weights or score-changing settings (records without a ``produced_by`` field are accepted as they
    are)."""
    stamp = json.loads(json.dumps(stamp, default=str))
    records = results.values() if keys is None else (results.get(k) for k in keys)
    for rec in records:
        theirs = rec.get("produced_by") if isinstance(rec, dict) else None
        if not isinstance(theirs, dict):
            continue
        diff = _difference(stamp, theirs)
        if diff is not None:
            name, was, now = diff
            if name.endswith("_weights"):
                base = name[: -len("_weights")]
                shown = f"{base}={theirs.get(base)!r} (weights {was}), not {stamp.get(base)!r} (weights {now})"
            else:
                shown = f"{name}={was!r}, not {now!r}"
            raise HindsightError(
                f"{results.path} holds results produced with {shown}; use another --out (or delete that file) so "
                "results of different models or settings are not mixed.")


def require_items(experiment: Experiment, items: Sequence[Item]) -> Sequence[Item]:
    """``items``, or one sentence when there are none (never a summary of nothing: a table of NaNs)."""
    if not items:
        raise HindsightError(f"The {experiment.name} evaluation has no items to run: its data file is empty or "
                             "every item was filtered out; nothing was written.")
    return items


def run_experiment(experiment: Experiment, results: ResultFile | str | Path, *, on_item: OnItem | None = None,
                   executor: Executor | None = None, loaders: Loaders | None = None,
                   on_pace: Callable[[Pace], None] | None = None, pace_after: int = 3, batch: int = 1,
                   stamp: dict[str, Any] | None = None) -> Any:
    """Run the items not finished in ``results``, appending each record as it comes; return the summary.

    Nothing is set up when every item is already done. An exception in an item stops the run after every
    record finished before it has been written, so rerunning resumes at that item. ``on_pace`` hears once,
    after ``pace_after`` computed items, what an item costs and how long the rest will take. A failure record
    (an item an executor gave up on, see :func:`failure`) is appended and passed to ``on_item`` like any other,
    left out of the summary, and retried by the next run. ``batch``: pending items handed to the default
    executor's ``run_batch`` at a time (an explicit ``executor`` decides for itself).

    Every record carries ``stamp`` (default: :func:`provenance` of an experiment that loads its own models), and
    a stored record of one of these items with another stamp stops the run before anything is computed.
    """
    results = open_results(experiment, results)
    items, todo = require_items(experiment, experiment.items()), []
    if stamp is None and experiment.parts is None:
        stamp = provenance(experiment)
    if stamp is not None:
        stamp = json.loads(json.dumps(stamp, default=str))
        check_provenance(results, stamp, [experiment.key(it) for it in items])
    note = on_item or (lambda _rec: None)
    for item in items:
        work = experiment.pending(item, usable(results.get(experiment.key(item))))
        if work is None:
            note(None)
        else:
            todo.append(work)
    if todo:
        stamps = [time.perf_counter()]
        unit = batch if executor is None and batch > 1 else 1  # records arrive a chunk at a time
        stream = (executor or in_process(loaders, batch))(experiment, todo)
        try:
            for item, record in stream:
                record = _record(experiment, usable(results.get(experiment.key(item))), record)
                if stamp is not None:
                    record = {**record, "produced_by": stamp}
                results.append(record)
                note(record)
                stamps.append(time.perf_counter())
                done = len(stamps) - 1
                if on_pace and done == min(max(pace_after, 2 * unit), len(todo)) and done < len(todo):
                    first = unit if done > unit else 0  # the first chunk also paid for the set-up
                    on_pace(Pace(done - first, (stamps[-1] - stamps[first]) / (done - first), len(todo) - done))
        finally:  # an executor that holds workers stops them now, not when the generator is collected
            getattr(stream, "close", lambda: None)()
    return experiment.summarise(completed(experiment, results, items))
