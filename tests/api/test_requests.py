"""Requests from JSON: good input round-trips; every bad field is an InvalidRequest naming that field."""

import json

import pytest

from hindsight.api import (REQUESTS, CiteRequest, DefendRequest, GenerateRequest, InvalidRequest, RainRequest,
                           RerankRequest, RetrieveRequest, Runtime, ScoreRequest, SMCRequest, run_dict)

GOOD = [
    {"method": "generate", "prompt": "hi", "n": 2, "temperature": 0, "stop": ["."]},
    {"method": "score", "query": "q", "response": "r", "scorer": "trlm-fo@bare", "task": "answer"},
    {"method": "rerank", "prompt": "hi", "n": 3, "scorer": "trlm-ba", "reverse_model": "rev"},
    {"method": "retrieve", "query": "q", "passages": ["a", "b"], "scorer": "forward", "top_k": 1},
    {"method": "cite", "summary": "S.", "article": "A. B.", "search": "binary"},
    {"method": "defend", "prompt": "p", "filter": "lm-judge", "threshold": 0, "response": "r"},
    {"method": "smc", "prompt": "p", "potential": "toxicity:low*regex:a^0.5", "twist": "t", "particles": 2},
    {"method": "rain", "prompt": "p", "task": "truthful", "evaluator": "toxicity:low", "min_visits": 0},
]


@pytest.mark.parametrize("d", GOOD, ids=lambda d: d["method"])
def test_good_requests_round_trip(d):
    req = REQUESTS[d["method"]].from_dict(d)
    again = type(req).from_dict(json.loads(json.dumps(req.to_dict())))
    assert again == req and again.to_dict()["method"] == d["method"]
    for key, value in d.items():
        assert req.to_dict()[key] == value


def test_ints_are_accepted_for_floats_and_stored_as_floats():
    req = GenerateRequest.from_dict({"prompt": "hi", "temperature": 1, "top_p": 1})
    assert isinstance(req.temperature, float) and req.temperature == 1.0


BAD = [
    (GenerateRequest, {"prompt": "hi", "n": 0}, "n"),
    (GenerateRequest, {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    (GenerateRequest, {"prompt": "hi", "temperature": -1}, "temperature"),
    (GenerateRequest, {"prompt": "hi", "top_p": 0}, "top_p"),
    (GenerateRequest, {"prompt": "hi", "top_k": -2}, "top_k"),
    (GenerateRequest, {"prompt": "hi", "n": "2"}, "n"),
    (GenerateRequest, {"prompt": "hi", "n": True}, "n"),
    (GenerateRequest, {"prompt": "hi", "n": 1.5}, "n"),
    (GenerateRequest, {"prompt": "hi", "stop": "."}, "stop"),
    (GenerateRequest, {"prompt": "hi", "stop": [1]}, "stop"),
    (GenerateRequest, {"prompt": "hi", "seeed": 1}, "seeed"),
    (GenerateRequest, {"n": 1}, "prompt"),
    (GenerateRequest, {"prompt": None}, "prompt"),
    (GenerateRequest, {"prompt": "hi", "method": "smc"}, "method"),
    (ScoreRequest, {"query": "q", "response": "r", "scorer": "best"}, "scorer"),
    (ScoreRequest, {"query": "q", "response": "r", "scorer": "trlm-foba"}, "reverse_model"),
    (ScoreRequest, {"query": "q", "response": "r", "task": "poetry"}, "task"),
    (ScoreRequest, {"query": "q", "response": "r", "scorer": "trlm-fo@nope"}, "scorer"),
    (RerankRequest, {"prompt": "hi", "n": 0}, "n"),
    (RerankRequest, {"prompt": "hi", "scorer": "nope"}, "scorer"),
    (RetrieveRequest, {"query": "q"}, "passages"),
    (RetrieveRequest, {"query": "q", "passages": ["a"], "corpus": "c.txt"}, "passages"),
    (RetrieveRequest, {"query": "q", "passages": []}, "passages"),
    (RetrieveRequest, {"query": "q", "passages": ["a"], "top_k": 0}, "top_k"),
    (RetrieveRequest, {"query": "q", "passages": ["a"], "max_words": 0}, "max_words"),
    (RetrieveRequest, {"query": "q", "passages": ["a"], "scorer": "trlm-ba"}, "reverse_model"),
    (RetrieveRequest, {"query": "q", "passages": ["a"], "fusion": "max", "scorer": "forward"}, "fusion"),
    (RetrieveRequest, {"query": "q", "passages": ["a"], "fusion": "rrf"}, "fusion"),
    (RetrieveRequest, {"query": "q", "passages": ["a"], "fusion": "z", "scorer": "forward", "alpha": 1.5}, "alpha"),
    (RetrieveRequest, {"query": "q", "passages": ["a"], "scorer": "forward", "fit_alpha": "dev.jsonl"}, "fit_alpha"),
    (CiteRequest, {"summary": "S.", "article": "A.", "search": "sideways"}, "search"),
    (CiteRequest, {"summary": " ", "article": "A."}, "summary"),
    (CiteRequest, {"summary": "S.", "article": ""}, "article"),
    (DefendRequest, {"prompt": "p", "filter": "vibes"}, "filter"),
    (DefendRequest, {"prompt": "p", "threshold": 1.0}, "threshold"),
    (DefendRequest, {"prompt": "p", "queries": 0}, "queries"),
    (DefendRequest, {"prompt": "p", "filter_threshold": float("nan")}, "filter_threshold"),
    (SMCRequest, {"prompt": "p", "potential": "bogus"}, "potential"),
    (SMCRequest, {"prompt": "p", "potential": ""}, "potential"),
    (SMCRequest, {"prompt": "p", "potential": "regex:a", "particles": 0}, "particles"),
    (SMCRequest, {"prompt": "p", "potential": "regex:a", "resample": "greedy"}, "resample"),
    (SMCRequest, {"prompt": "p", "potential": "regex:a", "ess_threshold": 1.5}, "ess_threshold"),
    (SMCRequest, {"prompt": "p", "potential": "regex:a", "min_tokens": 30}, "min_tokens"),
    (SMCRequest, {"prompt": "p", "potential": "regex:a", "max_tokens": 0}, "max_tokens"),
    (SMCRequest, {"prompt": "p"}, "potential"),
    (RainRequest, {"prompt": "p", "task": "poetry"}, "task"),
    (RainRequest, {"prompt": "p", "value_rule": "majority"}, "value_rule"),
    (RainRequest, {"prompt": "p", "max_iters": 0}, "max_iters"),
    (RainRequest, {"prompt": "p", "min_visits": -1}, "min_visits"),
    (RainRequest, {"prompt": "p", "evaluator": "nonsense"}, "evaluator"),
    (RainRequest, {"prompt": "p", "value_threshold": float("inf")}, "value_threshold"),
]


@pytest.mark.parametrize("cls, d, param", BAD, ids=[f"{c.method}-{p}-{i}" for i, (c, _, p) in enumerate(BAD)])
def test_bad_field_names_itself_in_one_sentence(cls, d, param):
    with pytest.raises(InvalidRequest) as e:
        cls.from_dict(d)
    assert e.value.param == param
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(".") and "--" not in msg


def test_renamed_swaps_the_field_for_a_flag():
    with pytest.raises(InvalidRequest) as e:
        GenerateRequest(prompt="hi", max_tokens=0).validate()
    assert str(e.value) == "max_tokens must be at least 1 (got 0)."
    assert str(e.value.renamed("--max-tokens")) == "--max-tokens must be at least 1 (got 0)."


def test_run_dict_rejects_unknown_methods_and_non_objects():
    rt = Runtime(allow_paths=False)
    for bad, param in (({"method": "dance"}, "method"), ({}, "method"), ([1], "request")):
        with pytest.raises(InvalidRequest) as e:
            run_dict(bad, rt)
        assert e.value.param == param


def test_every_method_has_a_request_and_a_runner():
    from hindsight.api.run import RUNNERS

    assert set(REQUESTS) == {"generate", "score", "rerank", "retrieve", "cite", "defend", "smc", "rain"}
    assert set(RUNNERS) == set(REQUESTS.values())
