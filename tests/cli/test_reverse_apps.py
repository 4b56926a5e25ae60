"""CLI of cite/defend/eval citation|jailbreak: input errors before any model loads; summaries from result files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hindsight.cli.app import app
from hindsight.errors import HindsightError
from hindsight.experiments.citation import citation_items
from hindsight.experiments.jailbreak import jailbreak_items
from hindsight.records.results import ResultFile

runner = CliRunner()


@pytest.mark.parametrize("args", [
    ["cite", "A summary.", "--article", "/nonexistent/article.txt"],
    ["cite", "A summary.", "--article", "/nonexistent/article.txt", "--search", "sideways"],
    ["defend", "hello", "--filter", "vibes"],
    ["eval", "jailbreak", "--filters", "keyword", "--threshold", "1.5"],
    ["eval", "citation", "--searches", "linear,sideways"],
])
def test_bad_input_is_one_sentence(args):
    result = runner.invoke(app, args)
    assert isinstance(result.exception, HindsightError), result.output
    assert "\n" not in str(result.exception)


def test_eval_citation_summarises_finished_records(data_root, tmp_path):
    items = [it for it in citation_items(data_root, 2, 8, 1) if it["overlap"] >= 0.0]
    rf = ResultFile(tmp_path / "c.jsonl", "key")
    for n, it in enumerate(items):
        rf.append({k: it[k] for k in ("key", "article", "highlight", "gold", "overlap")}
                  | {"n_sentences": len(it["sentences"]),
                     "results": {"trlm-fo/linear": {"index": it["gold"][0] if n == 0 else -1, "correct": n == 0,
                                                    "calls": 1, "pairs": 8, "tokens": 100, "seconds": 1.0}}})
    result = runner.invoke(app, ["eval", "citation", "--data", str(data_root), "--limit", "2", "--min-overlap", "0",
                                 "--out", str(rf.path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    (row,) = summary["rows"]
    assert summary["items"] == len(items) == 2 and row["correct"] == 1 and row["accuracy"] == 0.5


def test_eval_jailbreak_summarises_finished_records(data_root, tmp_path):
    rf = ResultFile(tmp_path / "j.jsonl", "key")
    for it in jailbreak_items(data_root, 2):
        attack = it["split"] == "attack"
        rf.append({"key": it["key"], "split": it["split"],
                   "filters": {"keyword": {"input_flagged": False, "query_flags": [attack, attack, False, False]}}})
    result = runner.invoke(app, ["eval", "jailbreak", "--data", str(data_root), "--limit", "2", "--filters",
                                 "keyword", "--out", str(rf.path), "--json"])
    assert result.exit_code == 0, result.output
    alone, rev = json.loads(result.stdout)["rows"]
    assert alone["fnr"]["rate"] == 1.0 and rev["fnr"]["rate"] == 0.0 and rev["fpr"]["rate"] == 0.0
