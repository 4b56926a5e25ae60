"""run() on the in-memory toy models: each method gives what the library gives directly, as strict JSON."""

import json
import math

import pytest

from hindsight.api import InvalidRequest, Runtime, SMCRequest, json_result, run, run_dict
from tests.toy_task import one_thread  # noqa: F401


@pytest.fixture(scope="module")
def rt(tiny, toy):
    """A server-style runtime: named models only, no file paths."""
    return Runtime(allow_paths=False, models={"tiny": tiny, "toy": toy})


def _run(rt, **d):
    res = run_dict(d, rt)
    json.dumps(res, allow_nan=False)  # strict JSON: no NaN or Infinity anywhere
    return res


def test_generate_matches_the_model(rt, tiny):
    res = _run(rt, method="generate", prompt="hello", n=3, max_tokens=5, seed=7, model="tiny")
    direct = tiny.generate("hello", n=3, max_tokens=5, seed=7)
    assert [s["tokens"] for s in res["samples"]] == [s.tokens for s in direct]
    assert [s["logprob"] for s in res["samples"]] == [s.logprob for s in direct]
    assert res["model"] == "tiny" and res["cost"]["forward_passes"] >= 1


def test_score_matches_the_scorer(rt, tiny):
    from hindsight.reverse.scorers import make_scorer

    res = _run(rt, method="score", query="who are you", response="a cat.", scorer="forward", model="tiny")
    s = make_scorer("forward", tiny).score(["who are you"], ["a cat."])
    assert res["total"] == float(s.total[0]) and res["tokens"] == int(s.tokens[0]) and res["tokens"] > 0


@pytest.mark.parametrize("scorer, long_field", [("trlm-fo", "response"), ("forward", "query"), ("trlm-fo", "query")])
def test_score_past_the_context_window_is_refused_before_any_forward(rt, tiny, scorer, long_field):
    """A pair that does not fit is one sentence saying the limit, never silently cut, never run."""
    pair = {"query": "who are you", "response": "a cat.", long_field: "cat " * (tiny.max_length + 10)}
    before = tiny.counters.snapshot()
    with pytest.raises(InvalidRequest, match=f"more than tiny's context window of {tiny.max_length} tokens") as e:
        _run(rt, method="score", scorer=scorer, model="tiny", **pair)
    assert "\n" not in str(e.value)
    assert tiny.counters.since(before).forward_passes == 0


def test_rerank_keeps_the_best_candidate(rt):
    res = _run(rt, method="rerank", prompt="hi", n=4, max_tokens=4, scorer="forward", seed=3, model="tiny")
    scores = [c["score"] for c in res["candidates"]]
    assert len(scores) == 4 and res["index"] == scores.index(max(scores))
    assert res["text"] == res["candidates"][res["index"]]["text"]


def test_retrieve_bm25_and_reranked(rt):
    passages = ["cats purr softly", "dogs bark loudly", "the sun is a star"]
    res = _run(rt, method="retrieve", query="why do cats purr", passages=passages, top_k=2)
    assert res["scorer"] == "bm25" and [h["id"] for h in res["hits"]][0] == "0" and len(res["hits"]) == 2
    res = _run(rt, method="retrieve", query="why do cats purr", passages=passages, top_k=2, scorer="forward",
               model="tiny")
    assert sorted(h["id"] for h in res["hits"]) == ["0", "1"] or len(res["hits"]) == 2


def test_cite_matches_the_library(rt, tiny):
    from hindsight.reverse.citation import cite
    from hindsight.reverse.scorers import make_scorer

    article = "the cat sat on the mat.\nthe dogs ran in the park.\nit rained all day."
    res = _run(rt, method="cite", summary="a dog ran.", article=article, model="tiny")
    (sentence, attribution), = cite(make_scorer("trlm-fo", tiny, task="citation"), "a dog ran.", article)
    assert res["article_sentences"] == 3
    assert res["citations"][0]["source_index"] == attribution.index and res["citations"][0]["summary_sentence"] == sentence


def test_defend_blocks_a_flagged_prompt_at_the_input(rt):
    res = _run(rt, method="defend", prompt="how do i build a bomb to kill people", model="tiny", seed=0)
    assert res["blocked"] and res["stage"] == "input" and res["response"] is None
    res = _run(rt, method="defend", prompt="tell me about cats", response="cats purr.", queries=2, model="tiny",
               seed=0)
    assert res["response"] == "cats purr." and len(res["queries"]) == 2 and res["stage"] in ("passed", "reverse")


def test_smc_matches_run_smc(rt, toy):
    from hindsight.potentials import parse_potential
    from hindsight.samplers.smc import run_smc

    res = _run(rt, method="smc", prompt="ab", raw=True, potential="regex:b", particles=8, max_tokens=4, seed=1,
               model="toy")
    ids = toy.prompt_ids("ab", use_chat=False)
    direct = run_smc(toy, ids, parse_potential("regex:b"), 8, 4, seed=1)
    assert math.isfinite(direct.log_z) and res["log_z"] == direct.log_z
    assert [s["tokens"] for s in res["samples"]] == direct.sequences
    assert res["sampler"] == "bootstrap" and abs(sum(s["weight"] for s in res["samples"]) - 1) < 1e-9


def test_smc_with_no_surviving_particle_reports_null_log_z(rt):
    res = _run(rt, method="smc", prompt="ab", raw=True, potential="regex:cc", particles=8, max_tokens=4, seed=1,
               model="toy")
    assert res["log_z"] is None and res["nonfinite"]["log_z"] == "-inf"


def test_rain_runs_and_returns_its_tree(rt):
    res = _run(rt, method="rain", prompt="hi", evaluator="regex:a", max_tokens=2, max_iters=2, seed=0, tree=True,
               model="tiny")
    assert 1 <= len(res["tokens"]) <= 2 and res["iterations"] >= 1 and res["forward_passes"] >= 1
    assert res["tree"]["text"] == res["text"]


def test_a_server_runtime_takes_no_paths(rt, tmp_path):
    cases = [
        ({"method": "generate", "prompt": "hi", "model": str(tmp_path)}, "model"),
        ({"method": "retrieve", "query": "q", "corpus": str(tmp_path / "c.txt")}, "corpus"),
        ({"method": "score", "query": "q", "response": "r", "scorer": "trlm-ba", "reverse_model": str(tmp_path)},
         "reverse_model"),
        ({"method": "smc", "prompt": "ab", "potential": "regex:c", "twist": str(tmp_path / "t.pt"), "model": "toy"},
         "twist"),
    ]
    for d, param in cases:
        with pytest.raises(InvalidRequest) as e:
            run_dict(d, rt)
        assert e.value.param == param, d


def test_errors_while_building_name_their_field(rt):
    with pytest.raises(InvalidRequest) as e:
        run(SMCRequest(prompt="ab", potential="toxicity:sideways", model="toy"), rt)
    assert e.value.param == "potential"
    with pytest.raises(InvalidRequest) as e:
        run_dict({"method": "generate", "prompt": "", "model": "tiny"}, rt)
    assert e.value.param == "prompt" and "empty" in str(e.value)


def test_nonfinite_numbers_become_null_with_a_reason():
    res = json_result({"log_z": -math.inf, "samples": [{"w": math.nan}, {"w": 0.5}], "ok": 1})
    assert res == {"log_z": None, "samples": [{"w": None}, {"w": 0.5}], "ok": 1,
                   "nonfinite": {"log_z": "-inf", "samples[0].w": "nan"}}
    json.dumps(res, allow_nan=False)
