import pytest

from hindsight.records.results import ResultFile
from hindsight.records.stats import wilson_interval
from hindsight.experiments.runner import run_experiment
from hindsight.experiments.trlm import PreferenceEval, RetrievalEval, summarise_preferences, summarise_retrieval
from hindsight.reverse.retrieval import BM25Index, Passage
from hindsight.reverse.scorers import make_scorer
from tests.experiments.stubs import over


def _pref(i, pref, s1, s2, l1=10, l2=20):
    return {"id": i, "preference": pref, "len_1": l1, "len_2": l2, "scores": {"x": [s1, s2]}}


def test_preference_summary_hand_computed():
    results = [
        _pref(0, 1.0, [-1.0, 1], [-4.0, 2]),  # sum picks 1 (right); mean -1 vs -2 picks 1 (right)
        _pref(1, 2.0, [-3.0, 1], [-4.0, 4]),  # sum picks 1 (wrong); mean -3 vs -1 picks 2 (right)
        _pref(2, 1.0, [-9.0, 3], [-2.0, 1], l1=30),  # sum picks 2 (wrong); mean -3 vs -2 picks 2 (wrong)
        _pref(3, 0.0, [0.0, 1], [0.0, 1]),  # a draw: left out
    ]
    rows = {r.system: r for r in summarise_preferences(results, ["x"])}
    assert rows["x (sum)"].value == pytest.approx(1 / 3) and rows["x (sum)"].n == 3
    assert rows["x (mean)"].value == pytest.approx(2 / 3)
    assert rows["majority class (always output 1)"].value == pytest.approx(2 / 3)
    assert rows["longer output"].value == pytest.approx(2 / 3)  # picks 2, 2, 1
    assert (rows["x (sum)"].low, rows["x (sum)"].high) == pytest.approx(wilson_interval(1, 3))


def test_retrieval_summary_hand_computed():
    results = [
        {"id": 1, "relevant": ["b"], "bm25": ["a", "b", "c"], "top_k": 3, "scores": {"x": [[-3, 1], [-1, 1], [-2, 1]]}},
        {"id": 2, "relevant": ["c"], "bm25": ["a", "b", "c"], "top_k": 3, "scores": {"x": [[-1, 1], [-5, 1], [-2, 1]]}},
    ]
    rows = {(r.system, r.metric): r.value for r in summarise_retrieval(results, ["x"], variants=("sum",),
                                                                        recall_at=(1,))}
    assert rows[("BM25", "MRR@10")] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert rows[("x (sum)", "MRR@10")] == pytest.approx((1 + 1 / 2) / 2)  # x ranks b first, then c second
    assert rows[("x (sum)", "Recall@1")] == pytest.approx(0.5)
    assert rows[("BM25", "Recall@1")] == 0.0


def test_runs_write_incrementally_and_resume(tmp_path, tiny):
    sc = {"forward": make_scorer("forward", tiny)}
    recs = [{"id": i, "instruction": "say hi", "output_1": "hi" * (i + 1), "output_2": "hello", "preference": 1.0}
            for i in range(3)]
    rf = ResultFile(tmp_path / "p.jsonl")
    run_experiment(over(PreferenceEval, recs[:2], scorers=["forward"]).use(scorers=sc), rf)
    assert len(ResultFile(tmp_path / "p.jsonl")) == 2
    calls = []
    rf2 = ResultFile(tmp_path / "p.jsonl")
    run_experiment(over(PreferenceEval, recs, scorers=["forward"]).use(scorers=sc), rf2, on_item=calls.append)
    assert len(calls) == 3 and len(rf2) == 3 and calls[:2] == [None, None]
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 3  # only the new item was scored
    # adding a scorer later scores only that scorer and keeps the old scores
    fo = {"trlm-fo": make_scorer("trlm-fo", tiny)}
    rows = run_experiment(over(PreferenceEval, recs, scorers=["trlm-fo"]).use(scorers=fo), rf2)
    assert set(ResultFile(tmp_path / "p.jsonl").get(0)["scores"]) == {"forward", "trlm-fo"}
    assert {r.system for r in rows} >= {"trlm-fo (sum)", "trlm-fo (mean)"}

    index = BM25Index([Passage("a", "cats purr"), Passage("b", "dogs bark"), Passage("c", "birds sing")])
    rr = ResultFile(tmp_path / "r.jsonl")
    claims = [{"id": 5, "claim": "cats purr", "cited_doc_ids": ["a"]}]
    run_experiment(over(RetrievalEval, claims, scorers=["forward"], top_k=2).use(scorers=sc, index=index), rr)
    rec = ResultFile(tmp_path / "r.jsonl").get(5)
    assert rec["bm25"][0] == "a" and len(rec["scores"]["forward"]) == 2
    # a summary with another top_k leaves out the claims reranked from top 2
    other_k = over(RetrievalEval, claims, scorers=["forward"], top_k=3).use()
    assert {r.n for r in run_experiment(other_k, rr)} == {0}


# written by the loop before the shared runner (run_preferences), forward then trlm-fo: a file from before resumes
BEFORE_RUNNER = [
    {"id": 0, "preference": 1.0, "len_1": 2, "len_2": 5,
     "scores": {"forward": [[-18.445930004119873, 3], [-27.603768229484558, 6]],
                "trlm-fo": [[-34.43101453781128, 7], [-35.487181425094604, 7]]}},
    {"id": 1, "preference": 1.0, "len_1": 4, "len_2": 5,
     "scores": {"forward": [[-31.44329071044922, 5], [-27.603768229484558, 6]],
                "trlm-fo": [[-33.14991497993469, 7], [-35.487181425094604, 7]]}},
]


def test_records_are_those_written_before_the_runner(tmp_path, tiny):
    import json

    recs = [{"id": i, "instruction": "say hi", "output_1": "hi" * (i + 1), "output_2": "hello", "preference": 1.0}
            for i in range(2)]
    path = tmp_path / "p.jsonl"
    for name in ("forward", "trlm-fo"):
        run_experiment(over(PreferenceEval, recs, scorers=[name]).use(scorers={name: make_scorer(name, tiny)}), path)
    latest = ResultFile(path).values()
    assert [list(r) for r in latest] == [list(r) for r in BEFORE_RUNNER]  # same fields, same order
    for got, want in zip(latest, BEFORE_RUNNER):
        assert {k: v for k, v in got.items() if k != "scores"} == {k: v for k, v in want.items() if k != "scores"}
        for name in ("forward", "trlm-fo"):
            assert [k for _, k in got["scores"][name]] == [k for _, k in want["scores"][name]]
            assert [t for t, _ in got["scores"][name]] == pytest.approx([t for t, _ in want["scores"][name]], rel=1e-6)
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == [0, 1, 0, 1]  # appended, not rewritten
