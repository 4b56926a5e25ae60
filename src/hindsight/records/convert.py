"""Turn the public release files of each evaluation set into the layout hindsight reads (``<root>/<folder>/...``).

Users do not have the development data folder: they download the public files (sources listed in
:data:`SOURCES` and in ``docs/data.md``) and run ``hindsight data convert KIND FILES... --out DIR``; then
``--data DIR`` (or ``$HINDSIGHT_DATA=DIR``) points every evaluation at it. Each converter checks the fields it
needs and fails with one sentence naming the file and record, never with a ``KeyError``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hindsight.errors import HindsightError
from hindsight.records.data import read_text


@dataclass(frozen=True)
class Source:
    """One evaluation set: what to download, what hindsight expects, and which converter does it."""

    kind: str
    inputs: tuple[str, ...]  # the public files, in the order the command takes them
    url: str
    writes: tuple[str, ...]  # relative paths under the data root


def jsonl_records(path: str | Path) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise HindsightError(f"{path} line {n} is not valid JSON.") from None
        if not isinstance(rec, dict):
            raise HindsightError(f"{path} line {n} is not a JSON object.")
        yield rec


def json_value(path: str | Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise HindsightError(f"{path} is not valid JSON (line {e.lineno}).") from None


def need(rec: dict[str, Any], field: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """``rec[field]`` of the expected type, or one sentence naming the file and record."""
    if field not in rec:
        raise HindsightError(f"{where} has no {field!r} field.")
    if not isinstance(rec[field], kind):
        raise HindsightError(f"{where}: field {field!r} has the wrong type ({type(rec[field]).__name__}).")
    return rec[field]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL atomically; returns how many (an empty result is an error: nothing was converted)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    if not lines:
        raise HindsightError(f"No records to write to {path}; is the input the right file?")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return len(lines)


# ---- HH-RLHF -----------------------------------------------------------------------------------------------
def _hh_rows(path: str, subset: str) -> Iterator[dict[str, Any]]:
    for n, rec in enumerate(jsonl_records(path)):
        where = f"{path} record {n + 1}"
        chosen, rejected = need(rec, "chosen", where), need(rec, "rejected", where)
        head = chosen.split("\n\nAssistant:", 1)[0]
        if "Human:" not in head:
            raise HindsightError(f"{where}: 'chosen' does not start with a 'Human:' turn.")
        yield {"id": f"{subset}-test-{n:05d}", "subset": subset, "prompt": head.split("Human:", 1)[1].strip(),
               "num_human_turns": chosen.count("\n\nHuman:"), "chosen": chosen, "rejected": rejected}


def hh_rlhf(files: list[str], out: Path, subset: str = "harmless-base") -> dict[str, int]:
    if subset not in ("harmless-base", "helpful-base"):
        raise HindsightError(f"--subset must be harmless-base or helpful-base (got {subset!r}).")
    target = out / f"hh_rlhf_{subset.replace('-', '_')}_test" / "test.jsonl"
    return {str(target): write_jsonl(target, _hh_rows(files[0], subset))}


# ---- TruthfulQA --------------------------------------------------------------------------------------------
def _split_answers(text: str) -> list[str]:
    return [a.strip() for a in text.split(";") if a.strip()]


def _targets(mc: dict[str, Any], name: str, where: str) -> dict[str, list]:
    got = need(mc, name, where, dict)
    return {"choices": list(got), "labels": [int(v) for v in got.values()]}


def truthfulqa(files: list[str], out: Path, subset: str = "") -> dict[str, int]:
    table = list(csv.DictReader(io.StringIO(read_text(files[0]))))
    mc = json_value(files[1])
    if not isinstance(mc, list):
        raise HindsightError(f"{files[1]} should hold a JSON list (mc_task.json).")
    by_question = {str(m.get("question", "")).strip(): m for m in mc if isinstance(m, dict)}
    rows = []
    for n, rec in enumerate(table):
        where = f"{files[0]} row {n + 2}"
        question = need(rec, "Question", where).strip()
        m = by_question.get(question)
        if m is None:
            continue  # rows without multiple-choice targets cannot be scored
        rows.append({"id": n, "type": rec.get("Type", ""), "category": rec.get("Category", ""),
                     "question": question, "best_answer": need(rec, "Best Answer", where).strip(),
                     "correct_answers": _split_answers(need(rec, "Correct Answers", where)),
                     "incorrect_answers": _split_answers(need(rec, "Incorrect Answers", where)),
                     "source": rec.get("Source", ""),
                     "mc1_targets": _targets(m, "mc1_targets", f"{files[1]} ({question[:40]!r})"),
                     "mc2_targets": _targets(m, "mc2_targets", f"{files[1]} ({question[:40]!r})")})
    target = out / "truthfulqa" / "truthfulqa.jsonl"
    return {str(target): write_jsonl(target, rows)}


# ---- AlpacaEval pairwise preferences ----------------------------------------------------------------------
def alpaca_eval(files: list[str], out: Path, subset: str = "") -> dict[str, int]:
    data = json_value(files[0])
    if not isinstance(data, list):
        raise HindsightError(f"{files[0]} should hold a JSON list of annotations.")
    rows = []
    for n, rec in enumerate(data):
        where = f"{files[0]} item {n}"
        if not isinstance(rec, dict):
            raise HindsightError(f"{where} is not a JSON object.")
        pref = need(rec, "preference", where, (int, float))
        rows.append({"id": n, "dataset": rec.get("dataset", ""), "instruction": need(rec, "instruction", where),
                     "output_1": need(rec, "output_1", where), "generator_1": rec.get("generator_1", ""),
                     "output_2": need(rec, "output_2", where), "generator_2": rec.get("generator_2", ""),
                     "annotator": rec.get("annotator", ""), "preference": float(pref)})
    target = out / "alpaca_eval" / "pairwise_preferences_alpaca7b_vs_text_davinci_003.jsonl"
    return {str(target): write_jsonl(target, rows)}


# ---- SciFact -----------------------------------------------------------------------------------------------
def _evidence(rec: dict[str, Any], where: str) -> list[dict[str, Any]]:
    ev = rec.get("evidence") or {}
    if not isinstance(ev, dict):
        raise HindsightError(f"{where}: 'evidence' should be an object keyed by document id.")
    return [{"doc_id": int(doc), "label": need(s, "label", where), "sentences": need(s, "sentences", where, list)}
            for doc, sets in ev.items() for s in sets]


def scifact(files: list[str], out: Path, subset: str = "") -> dict[str, int]:
    claims, qrels = [], []
    for n, rec in enumerate(jsonl_records(files[0])):
        where = f"{files[0]} record {n + 1}"
        cited = [int(d) for d in need(rec, "cited_doc_ids", where, list)]
        claims.append({"id": need(rec, "id", where, int), "claim": need(rec, "claim", where),
                       "cited_doc_ids": cited, "evidence": _evidence(rec, where)})
        qrels += [{"query_id": rec["id"], "doc_id": d, "score": 1} for d in cited]
    corpus = []
    for n, rec in enumerate(jsonl_records(files[1])):
        where = f"{files[1]} record {n + 1}"
        corpus.append({"doc_id": need(rec, "doc_id", where, int), "title": need(rec, "title", where),
                       "abstract": need(rec, "abstract", where, list)})
    folder = out / "scifact_retrieval"
    written = {str(folder / "claims.jsonl"): write_jsonl(folder / "claims.jsonl", claims),
               str(folder / "corpus.jsonl"): write_jsonl(folder / "corpus.jsonl", corpus)}
    if qrels:
        written[str(folder / "qrels.jsonl")] = write_jsonl(folder / "qrels.jsonl", qrels)
    return written


Converter = Callable[[list[str], Path, str], dict[str, int]]

SOURCES: dict[str, tuple[Source, Converter]] = {
    "hh-rlhf": (Source("hh-rlhf", ("test.jsonl.gz",), "https://github.com/anthropics/hh-rlhf (harmless-base/ or "
                       "helpful-base/test.jsonl.gz)", ("hh_rlhf_harmless_base_test/test.jsonl",)), hh_rlhf),
    "truthfulqa": (Source("truthfulqa", ("TruthfulQA.csv", "data/mc_task.json"),
                          "https://github.com/sylinrl/TruthfulQA", ("truthfulqa/truthfulqa.jsonl",)), truthfulqa),
    "alpaca-eval": (Source("alpaca-eval", ("results/alpaca-7b/alpaca_eval_gpt4/annotations.json",),
                           "https://github.com/tatsu-lab/alpaca_eval",
                           ("alpaca_eval/pairwise_preferences_alpaca7b_vs_text_davinci_003.jsonl",)), alpaca_eval),
    "scifact": (Source("scifact", ("claims_dev.jsonl", "corpus.jsonl"),
                       "https://github.com/allenai/scifact (data.tar.gz)",
                       ("scifact_retrieval/claims.jsonl", "scifact_retrieval/corpus.jsonl",
                        "scifact_retrieval/qrels.jsonl")), scifact),
}


def convert(kind: str, files: list[str], out: str | Path, subset: str = "harmless-base") -> dict[str, int]:
    """Convert ``files`` (the public release files of ``kind``) into ``out``; returns {written path: rows}."""
    if kind not in SOURCES:
        raise HindsightError(f"Unknown dataset {kind!r}; choose from {', '.join(SOURCES)}.")
    source, fn = SOURCES[kind]
    if len(files) != len(source.inputs):
        raise HindsightError(f"{kind} needs {len(source.inputs)} file(s): {' '.join(source.inputs)} "
                             f"(got {len(files)}).")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise HindsightError(f"--out {out} exists and is not a folder.")
    return fn(files, out, subset)
