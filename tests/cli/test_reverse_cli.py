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
    (["eval", "retrieval", "--alpha", "0.3"], "need --fusion"),
    (["eval", "retrieval", "--fusion", "max"], "Unknown fusion 'max'"),
    (["eval", "retrieval", "--fusion", "z", "--alpha", "2"], "--alpha must lie in [0, 1]"),
    (["retrieve", "q", "--corpus", "/dev/null", "--fusion", "rrf"], "needs a reranker"),
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


def run_ok(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["hindsight", *args])
    main()
    return capsys.readouterr().out


def _finished_retrieval(tmp_path):
    """A claims file and a result file in which every claim is done: summaries need no model."""
    claims = tmp_path / "claims.jsonl"
    claims.write_text("".join(json.dumps({"id": i, "claim": "c", "cited_doc_ids": ["a"]}) + "\n" for i in range(6)))
    recs = [{"id": i, "relevant": ["a"], "bm25": ["a", "b", "c"], "bm25_scores": [3.0, 2.0, 1.0 + i / 10],
             "top_k": 3, "scores": {"forward": [[-2.0 - i, 2], [-1.0, 2], [-3.0, 3]]}} for i in range(6)]
    out = tmp_path / "r.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return claims, out


def test_eval_retrieval_fits_alpha_on_development_claims(monkeypatch, capsys, tmp_path):
    claims, out = _finished_retrieval(tmp_path)
    stdout = run_ok(monkeypatch, capsys, "eval", "retrieval", "--data", str(claims), "--scorers", "forward",
                    "--top-k", "3", "--fusion", "minmax", "--fit-alpha", "4:6", "--out", str(out), "--json")
    res = json.loads(stdout)
    assert res["claims"] == 4 and res["dev_claims"] == 2 and res["fusion"] == "minmax"
    fit = next(f for f in res["fits"] if f["system"] == "forward (sum)")
    assert fit["alpha"] < 0.5 and fit["metric_at_alpha"] == 1.0  # BM25 is right on every claim here
    systems = {r["system"] for r in res["rows"]}
    assert f"forward (sum) + BM25 [minmax, alpha {fit['alpha']:g}]" in systems
    ndcg = next(t for t in res["paired"] if t["metric"] == "NDCG@10")
    assert ndcg["baseline"] == "BM25" and ndcg["n"] == 4
    assert res["ceiling"]["recall"] == 1.0
    stored = [json.loads(x) for x in out.read_text().splitlines() if "fusion-fit" in x]
    assert {r["id"] for r in stored} == {"fusion-fit:forward (sum):minmax", "fusion-fit:forward (mean):minmax"}


def test_eval_retrieval_table_shows_paired_results(monkeypatch, capsys, tmp_path):
    claims, out = _finished_retrieval(tmp_path)
    stdout = run_ok(monkeypatch, capsys, "eval", "retrieval", "--data", str(claims), "--scorers", "forward",
                    "--top-k", "3", "--fusion", "rrf", "--alpha", "0.5", "--out", str(out))
    assert "paired NDCG@10" in stdout and "first-stage ceiling" in stdout and "6 claims" in stdout


def test_eval_scorers_share_one_copy_of_the_model(tmp_path):
    """``--scorers forward,trlm-fo`` loads the forward model once, in the CLI and in a worker alike."""
    from hindsight.cli.reverse_eval import _loaders
    from hindsight.experiments.runner import Loaders
    from hindsight.lm.toy import save_checkpoint, tiny_model

    save_checkpoint(tiny_model(), tmp_path / "tiny")
    for loaders in (_loaders(), Loaders()):
        a = loaders.scorer("forward", str(tmp_path / "tiny"), None, "cpu", "retrieval")
        b = loaders.scorer("trlm-fo", str(tmp_path / "tiny"), None, "cpu", "retrieval")
        assert a.lm is b.lm and a.name != b.name
