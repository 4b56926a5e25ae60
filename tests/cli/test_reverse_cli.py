"""CLI error cases: one line on stderr, exit code 2, before any model is loaded."""

import json
import sys

import pytest

from hindsight.cli.app import main


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["hindsight", *args])
    with pytest.raises(SystemExit) as e:
        main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


@pytest.mark.parametrize("args, message", [
    (["score", "q", "a", "--scorer", "best"], "Unknown scorer 'best'"),
    (["score", "q", "a", "--scorer", "trlm-ba"], "needs a reverse-trained model"),
    (["score", "q", "a", "--scorer", "trlm-foba", "--reverse-model", "/nonexistent"], "not a trained model"),
    (["rerank", "hi", "--scorer", "trlm-ba"], "needs a reverse-trained model"),
    (["rerank", "hi", "--n", "0"], "--n must be at least 1"),
    (["retrieve", "q", "--corpus", "/nonexistent.jsonl"], "corpus file /nonexistent.jsonl does not exist"),
    (["eval", "preferences", "--scorers", "self,nope"], "Unknown scorer 'nope'"),
    (["eval", "retrieval", "--scorers", "trlm-ba"], "need a reverse-trained model"),
    (["eval", "retrieval", "--top-k", "0"], "--top-k must be at least 1"),
    (["reverse", "train", "--out", "/tmp/x", "--preset", "huge"], "Unknown preset 'huge'"),
    (["reverse", "train", "--out", "/tmp/x"], "No training data"),
])
def test_one_line_errors(monkeypatch, capsys, args, message):
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_retrieve_bm25_only_json(monkeypatch, capsys, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("cats purr softly\ndogs bark loudly\nthe sun is a star\n")
    monkeypatch.setattr(sys, "argv", ["hindsight", "retrieve", "why do cats purr", "--corpus", str(corpus),
                                      "--top-k", "2", "--json"])
    main()
    res = json.loads(capsys.readouterr().out)
    assert res["scorer"] == "bm25" and [h["id"] for h in res["hits"]][0] == "0" and len(res["hits"]) == 2
