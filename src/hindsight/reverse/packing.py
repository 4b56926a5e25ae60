"""Training data for reverse-order models: units (documents or query-response pairs) packed into rows.

A unit becomes ``tag + ids + [eos]`` where ``ids`` are its token ids in the chosen direction; a pair reads ``Q A``
forwards and ``rev(A) rev(Q)`` backwards, exactly the sequence the ``trlm-ba`` scorer scores. Units are packed
into rows of ``seq_len`` tokens in an order fixed by (seed, epoch), so the data position is two integers and a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hindsight.errors import HindsightError
from hindsight.records.data import data_root, read_jsonl, read_text
from hindsight.lm import LanguageModel

if TYPE_CHECKING:
    from hindsight.reverse.training import TrainConfig

Unit = str | tuple[str, str]  # a text, or a (query, response) pair


def _record_units(rec: dict[str, Any]) -> list[Unit]:
    if "query" in rec and "response" in rec:
        return [(str(rec["query"]), str(rec["response"]))]
    if "instruction" in rec and "output" in rec:
        return [(str(rec["instruction"]), str(rec["output"]))]
    if "abstract" in rec:  # SciFact corpus
        body = rec["abstract"]
        return [" ".join([rec.get("title", ""), *body] if isinstance(body, list) else [rec.get("title", ""), body])]
    if "text" in rec:
        return [str(rec["text"])]
    raise HindsightError("A training record needs 'text', 'abstract', 'query'+'response' or 'instruction'+'output'.")


NAMED_DATA = {  # local dataset name -> (folder, file)
    "scifact_corpus": ("scifact_retrieval", "corpus.jsonl"),
    "rt_polarity": ("rt_polarity", "rt_polarity.jsonl"),
    "imdb_test_sample": ("imdb_test_sample", "imdb_test_sample.jsonl"),
}


def read_units(sources: Sequence[str], data_dir: str | None = None, limit: int | None = None) -> list[Unit]:
    """Units from files (.txt: blank-line separated documents; .jsonl: see ``_record_units``) or named data."""
    units: list[Unit] = []
    for src in sources:
        path = Path(src).expanduser()
        if src in NAMED_DATA and not path.exists():
            folder, name = NAMED_DATA[src]
            path = data_root(data_dir) / folder / name
        if not path.is_file():
            raise HindsightError(f"Training data {src} is neither a file nor one of {', '.join(NAMED_DATA)}.")
        if path.suffix == ".jsonl":
            for n, rec in enumerate(read_jsonl(path), 1):
                if not isinstance(rec, dict):
                    raise HindsightError(f"The training data file {path}: record {n} is not a JSON object.")
                units.extend(_record_units(rec))
        else:
            text = read_text(path, "training data")
            units.extend(d.strip() for d in text.split("\n\n") if d.strip())
    if limit is not None:
        units = units[:limit]
    if not units:
        raise HindsightError("The training data is empty.")
    return units


def unit_ids(lm: LanguageModel, unit: Unit, reverse: bool) -> list[int]:
    """Token ids of a unit in one direction (a pair is ``Q A`` forwards, ``rev(A) rev(Q)`` backwards)."""
    if isinstance(unit, tuple):
        q, a = lm.encode(unit[0]), lm.encode(unit[1])
        return a[::-1] + q[::-1] if reverse else q + a
    ids = lm.encode(unit)
    return ids[::-1] if reverse else ids


class PackedData:
    """Packs units into rows of ``seq_len`` tokens; the position (epoch, index) is all the state it has."""

    def __init__(self, lm: LanguageModel, units: Sequence[Unit], cfg: TrainConfig) -> None:
        self.lm, self.cfg = lm, cfg
        self.eos = lm.eos_token_ids[0]
        self.tags = {False: lm.encode(cfg.forward_tag), True: lm.encode(cfg.reverse_tag)} if cfg.mode == "foba" \
            else {False: [], True: []}
        room = cfg.seq_len - 1 - max(len(t) for t in self.tags.values())
        if room < 4:
            raise HindsightError(f"--seq-len {cfg.seq_len} leaves no room for text after the direction tag.")
        # pieces are cut in forward order; a long document becomes several units
        self.units: list[tuple[str, str] | list[int]] = []
        for u in units:
            if isinstance(u, tuple):
                self.units.append(u)
                continue
            ids = lm.encode(u)
            self.units.extend(ids[s : s + room] for s in range(0, len(ids), room))
        if not self.units:
            raise HindsightError("The training data has no tokens.")
        self.room = room
        self.epoch, self.index = 0, 0
        self._order_epoch, self._order = -1, []  # the shuffled order of the current epoch

    def _order_of(self, epoch: int) -> list[int]:
        order = list(range(len(self.units)))
        random.Random(self.cfg.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def _sequence(self, k: int, reverse: bool) -> list[int]:
        unit = self.units[k]
        if isinstance(unit, tuple):
            ids = unit_ids(self.lm, unit, reverse)[: self.room]
        else:
            ids = unit[::-1] if reverse else unit
        return self.tags[reverse] + ids + [self.eos]

    def _next(self) -> list[int]:
        if self._order_epoch != self.epoch:
            self._order, self._order_epoch = self._order_of(self.epoch), self.epoch
        k = self._order[self.index]
        counter = self.epoch * len(self.units) + self.index
        reverse = self.cfg.mode == "ba" or counter % 2 == 1  # foba: alternate directions
        self.index += 1
        if self.index == len(self.units):
            self.epoch, self.index = self.epoch + 1, 0
        return self._sequence(k, reverse)

    def batch(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``rows`` packed rows (ids, attention mask), padded with the pad token where a row ran short."""
        ids = torch.full((rows, self.cfg.seq_len), self.lm.pad_token_id, dtype=torch.long)
        mask = torch.zeros((rows, self.cfg.seq_len), dtype=torch.long)
        for r in range(rows):
            filled = 0
            while True:
                pos = (self.epoch, self.index)
                seq = self._next()
                if filled and filled + len(seq) > self.cfg.seq_len:
                    self.epoch, self.index = pos  # does not fit: it starts the next row
                    break
                seq = seq[: self.cfg.seq_len - filled]
                ids[r, filled : filled + len(seq)] = torch.tensor(seq)
                mask[r, filled : filled + len(seq)] = 1
                filled += len(seq)
                if filled >= self.cfg.seq_len:
                    break
        return ids, mask

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
