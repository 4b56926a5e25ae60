import json

import pytest

from hindsight.errors import HindsightError
from hindsight.reverse.rerank import best_of_n
from hindsight.reverse.retrieval import BM25Index, Passage, read_corpus, retrieve, truncate_words
from hindsight.reverse.scorers import make_scorer

CORPUS = [Passage("0", "cats purr and sleep all day"), Passage("1", "dogs bark at the mail carrier"),
          Passage("2", "the sun is a star"), Passage("3", "cats and dogs can be friends")]


def test_bm25_first_stage_finds_the_matching_passage():
    index = BM25Index(CORPUS)
    hits = retrieve("why do cats purr", index, top_k=2)
    assert hits[0]["id"] == "0" and len(hits) == 2
    assert [h["rank"] for h in hits] == [1, 2]
    assert hits[0]["bm25"] >= hits[1]["bm25"]
    with pytest.raises(HindsightError):
        retrieve("cats", index, top_k=0)


def test_rerank_orders_by_the_scorer(tiny):
    index = BM25Index(CORPUS)
    sc = make_scorer("trlm-fo", tiny, task="retrieval")
    hits = retrieve("cats", index, top_k=3, scorer=sc)
    ids = [h["id"] for h in hits]
    want = sc.score(["cats"] * 3, [p.text for p in CORPUS if p.id in ids]).total
    by_id = dict(zip([p.id for p in CORPUS if p.id in ids], want.tolist()))
    assert [h["score"] for h in hits] == pytest.approx(sorted(by_id.values(), reverse=True), abs=1e-6)
    assert all(h["score"] == pytest.approx(by_id[h["id"]], abs=1e-6) for h in hits)


def test_read_corpus_formats(tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"doc_id": 7, "title": "T", "abstract": ["a b.", "c d."]}) + "\n")
    assert read_corpus(tmp_path / "c.jsonl") == [Passage("7", "T. a b. c d.")]
    (tmp_path / "c.txt").write_text("one\n\ntwo\n")
    assert read_corpus(tmp_path / "c.txt") == [Passage("0", "one"), Passage("2", "two")]
    with pytest.raises(HindsightError, match="does not exist"):
        read_corpus(tmp_path / "nope.jsonl")
    assert truncate_words("a b c d", 2) == "a b" and truncate_words("a b", None) == "a b"


def test_read_corpus_reads_other_text_fields_and_never_indexes_an_empty_passage(tmp_path):
    """``body`` / ``contents`` (other corpora's names for the text) are read; a record with no text is refused
    by number and id instead of becoming an empty passage; binary files are one sentence naming the file."""
    rows = [{"id": "a", "body": "Cats purr."}, {"_id": "b", "contents": "Dogs bark."},
            {"docid": "c", "title": "Only a title"}, {"id": "d", "content": ["Two", "parts."]}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_corpus(tmp_path / "c.jsonl") == [Passage("a", "Cats purr."), Passage("b", "Dogs bark."),
                                                  Passage("c", "Only a title"), Passage("d", "Two parts.")]
    for bad, match in (({"id": "x", "words": "hi"}, r"record 2 \(id x\) has no text field"),
                       ({"id": "y", "text": " ", "title": ""}, r"record 2 \(id y\) has an empty text"),
                       (42, "record 2 is not a JSON object")):
        (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(HindsightError, match=match):
            read_corpus(tmp_path / "bad.jsonl")
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))
    with pytest.raises(HindsightError, match="corpus file .*img.png looks like a binary file"):
        read_corpus(tmp_path / "img.png")
    (tmp_path / "latin.txt").write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(HindsightError, match="latin.txt is not UTF-8 text"):
        read_corpus(tmp_path / "latin.txt")
    (tmp_path / "bin.jsonl").write_bytes(b'{"id": 1, "text": "ok"}\n\xff\xfe\n')
    with pytest.raises(HindsightError, match="bin.jsonl line 2 is not UTF-8"):
        read_corpus(tmp_path / "bin.jsonl")


def test_best_of_n_picks_the_highest_score(tiny):
    sc = make_scorer("forward", tiny)
    res = best_of_n(tiny, "say hi", sc, n=4, max_tokens=6, seed=3)
    scores = [c["score"] for c in res.candidates]
    assert len(scores) == 4 and res.index == scores.index(max(scores))
    assert res.text == res.candidates[res.index]["text"]
    again = best_of_n(tiny, "say hi", sc, n=4, max_tokens=6, seed=3)
    assert again.as_dict() == res.as_dict()


def test_fused_retrieval_matches_the_fusion_of_both_stages(tiny):
    from hindsight.reverse.fusion import fuse

    index = BM25Index(CORPUS)
    sc = make_scorer("trlm-fo", tiny, task="retrieval")
    plain = {h["id"]: h for h in retrieve("cats", index, top_k=3, scorer=sc)}
    hits = retrieve("cats", index, top_k=3, scorer=sc, fusion="rrf", alpha=0.3)
    ids = [p.id for p, _ in index.search("cats", 3)]
    want = fuse([plain[i]["bm25"] for i in ids], [plain[i]["score"] for i in ids], "rrf", 0.3)
    assert sorted(h["score"] for h in hits) == pytest.approx(sorted(want))
    assert all(h["reranker"] == pytest.approx(plain[h["id"]]["score"], abs=1e-6) for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    with pytest.raises(HindsightError, match="reranker"):
        retrieve("cats", index, top_k=3, fusion="minmax")


def test_fit_retrieval_alpha_is_fit_alpha_on_the_scored_top_k(tiny, tmp_path):
    from hindsight.records.ranking import ndcg_at_k
    from hindsight.reverse.fusion import Query, fit_alpha
    from hindsight.reverse.retrieval import fit_retrieval_alpha, read_dev_queries

    dev_file = tmp_path / "dev.jsonl"
    dev_file.write_text(json.dumps({"query": "cats", "relevant": ["3"]}) + "\n"
                        + json.dumps({"claim": "dogs bark", "cited_doc_ids": [1]}) + "\n"
                        + json.dumps({"query": "the sun", "relevant": ["2"]}) + "\n")
    dev = read_dev_queries(dev_file)
    assert dev[1] == ("dogs bark", ["1"])
    index = BM25Index(CORPUS)
    sc = make_scorer("trlm-fo", tiny, task="retrieval")
    got = fit_retrieval_alpha(dev, index, sc, method="minmax", top_k=3, folds=3)
    queries = []
    for q, rel in dev:
        hits = index.search(q, 3)
        second = sc.score([q] * len(hits), [p.text for p, _ in hits]).total.tolist()
        queries.append(Query([p.id for p, _ in hits], [s for _, s in hits], second, rel))
    want = fit_alpha(queries, lambda r, rel: ndcg_at_k(r, rel, 10), method="minmax", folds=3)
    assert got.alpha == want.alpha and got.n_queries == 3 and got.folds == 3
    assert got.mean_by_alpha == pytest.approx(want.mean_by_alpha, abs=1e-9)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "cats"}) + "\n")
    with pytest.raises(HindsightError, match="record 1"):
        read_dev_queries(bad)


def test_retrieve_cli_fits_alpha_and_applies_it(tmp_path, monkeypatch, capsys):
    import sys

    from hindsight.cli.app import main
    from hindsight.lm.toy import save_checkpoint, tiny_model

    model = tmp_path / "tiny"
    save_checkpoint(tiny_model(), model)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": p.id, "text": p.text}) + "\n" for p in CORPUS))
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"query": "cats", "relevant": ["3"]}) + "\n"
                   + json.dumps({"query": "dogs", "relevant": ["1"]}) + "\n")
    args = ["hindsight", "retrieve", "cats and dogs", "--corpus", str(corpus), "--scorer", "forward",
            "--fusion", "z", "--top-k", "3", "--model", str(model), "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", [*args, "--fit-alpha", str(dev), "--json"])
    main()
    res = json.loads(capsys.readouterr().out)
    assert res["fit"]["n_queries"] == 2 and res["alpha"] == res["fit"]["alpha"] and res["fusion"] == "z"
    monkeypatch.setattr(sys, "argv", [*args, "--alpha", str(res["alpha"]), "--json"])
    main()
    again = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in again["hits"]] == [h["id"] for h in res["hits"]]  # the fitted alpha, applied
    monkeypatch.setattr(sys, "argv", [*args, "--alpha", "0.3", "--fit-alpha", str(dev)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2 and "either --alpha or --fit-alpha" in capsys.readouterr().err
