"""Pinned outputs of the packaged model: the same request and seed give the same tokens and numbers as the
commands printed before they went through ``hindsight.api`` (captured with ``hindsight ... --json``)."""

import pytest

from hindsight.api import Runtime, run_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rt(default_lm):
    return Runtime(models={"smollm2-135m": default_lm})


def test_generate_sampled_and_greedy(rt):
    # hindsight generate "Tell me a joke." -n 2 --max-tokens 12 --seed 3 --json
    res = run_dict({"method": "generate", "prompt": "Tell me a joke.", "n": 2, "max_tokens": 12, "seed": 3}, rt)
    assert [s["tokens"] for s in res["samples"]] == [
        [49, 7109, 1137, 28, 476, 57, 1510, 2206, 436, 29041, 418, 253],
        [63, 101, 3285, 257, 4808, 865, 449, 28, 732, 253, 14047, 559]]
    # a float32 sum of 12 log-probs: its last digits follow the BLAS build and thread count (relative 1e-5)
    assert [s["logprob"] for s in res["samples"]] == pytest.approx([-39.82838208973408, -50.37542366981506], rel=1e-5)
    # hindsight generate "Say hi" -n 1 --max-tokens 8 -t 0 --json
    res = run_dict({"method": "generate", "prompt": "Say hi", "max_tokens": 8, "temperature": 0}, rt)
    assert res["samples"][0]["text"] == "Hello there, welcome to my world!"
    assert res["samples"][0]["tokens"] == [19556, 665, 28, 10668, 288, 957, 905, 17]


def test_smc(rt):
    # hindsight smc "Write a happy sentence." -p sentiment:positive --particles 4 --max-tokens 8 --seed 1 --json
    res = run_dict({"method": "smc", "prompt": "Write a happy sentence.", "potential": "sentiment:positive",
                    "particles": 4, "max_tokens": 8, "seed": 1}, rt)
    assert [s["tokens"] for s in res["samples"]] == [
        [18, 504, 5587, 10808, 288, 957, 6903, 1977], [50, 1325, 314, 253, 2606, 47925, 28, 588],
        [51, 541, 371, 375, 2903, 3818, 314, 582], [49, 7970, 8013, 30, 2]]
    assert res["log_z"] == pytest.approx(-0.2742888303407849, abs=1e-4)
    assert res["ess"] == pytest.approx([4.0, 4.0, 4.0, 4.0, 3.962, 3.962, 3.962, 3.8398], abs=1e-3)


def test_score_and_rerank(rt):
    # hindsight score "What is the capital of France?" "Paris is the capital of France." --json
    res = run_dict({"method": "score", "query": "What is the capital of France?",
                    "response": "Paris is the capital of France."}, rt)
    assert res["tokens"] == 7 and res["total"] == pytest.approx(-2.65896768681705, abs=1e-4)
    # hindsight rerank "Name a fruit." -n 3 --max-tokens 10 --seed 2 --json
    res = run_dict({"method": "rerank", "prompt": "Name a fruit.", "n": 3, "max_tokens": 10, "seed": 2}, rt)
    assert res["index"] == 2 and res["text"] == "Asheverbax is a fruit that provides a"
    assert [c["score"] for c in res["candidates"]] == pytest.approx(
        [-17.96949452161789, -21.05513620376587, -17.37108612060547], abs=1e-4)
