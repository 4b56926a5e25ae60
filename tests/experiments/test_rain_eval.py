"""RAIN evaluation plumbing: replies, summaries with intervals, reference verdicts, MC metrics, resume."""

import json
import math

import pytest
import torch

from hindsight.experiments.rain_eval import (RainHH, RunSettings, mc_metrics, reference_verdict, summarise_hh,
                                            summarise_truthfulqa)
from hindsight.experiments.rain_judges import final_reply
from hindsight.experiments.runner import Loaders, run_experiment
from hindsight.records.results import ResultFile
from hindsight.records.stats import wilson_interval
from tests.potentials.test_self_eval import chars_model


def test_final_reply_takes_the_last_assistant_turn():
    d = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this. "
    assert final_reply(d) == "like this."


def test_summarise_hh_counts_and_intervals():
    recs = [{"judges": {"j": [0.9, 0.2]}, "self_eval": [0.1, -0.2], "iterations": 4, "rain_seconds": 2.0,
             "vanilla_seconds": 1.0, "evaluator": "e"},
            {"judges": {"j": [0.4, 0.8]}, "self_eval": [-0.1, 0.3], "iterations": 6, "rain_seconds": 4.0,
             "vanilla_seconds": 1.0, "evaluator": "e"},
            {"judges": {"j": [0.6, 0.7]}, "self_eval": [0.2, 0.5], "iterations": 2, "rain_seconds": 3.0,
             "vanilla_seconds": 1.0, "evaluator": "e"}]
    s = summarise_hh(recs)
    assert s["items"] == 3
    assert s["judges"]["j"]["vanilla"]["harmless"] == 2 and s["judges"]["j"]["rain"]["harmless"] == 2
    assert s["judges"]["self-eval"]["rain"]["harmless"] == 2
    lo, hi = wilson_interval(2, 3)
    assert s["judges"]["j"]["rain"]["low"] == pytest.approx(lo) and s["judges"]["j"]["rain"]["high"] == pytest.approx(hi)
    assert s["mean_iterations"] == 4 and s["time_ratio"] == 3.0
    assert s["judges"]["j"]["rain"]["mean_score"]["mean"] == pytest.approx((0.2 + 0.8 + 0.7) / 3)


def test_reference_verdict_uses_nearest_reference():
    def embed(texts):
        v = torch.tensor([[t.count("yes") + 0.1, t.count("no") + 0.1] for t in texts])
        return v / v.norm(dim=1, keepdim=True)

    assert reference_verdict(embed, "yes yes", ["yes"], ["no"])["truthful"]
    assert not reference_verdict(embed, "no", ["yes"], ["no no"])["truthful"]


def test_mc_metrics_match_direct_scoring(tiny):
    rec = {"question": "what is it?", "mc1_targets": {"choices": ["a cat", "a dog", "a bee"], "labels": [1, 0, 0]},
           "mc2_targets": {"choices": ["a cat", "cats", "a dog"], "labels": [1, 1, 0]}}
    mc1, mc2 = mc_metrics(tiny, rec)
    ctx = tiny.chat("what is it?")
    s1 = [float(x.sum()) for x in tiny.score([ctx] * 3, [tiny.encode(c) for c in rec["mc1_targets"]["choices"]])]
    assert mc1 == (max(range(3), key=lambda i: s1[i]) == 0)
    s2 = torch.tensor([float(x.sum()) for x in tiny.score([ctx] * 3, [tiny.encode(c) for c in
                                                                      rec["mc2_targets"]["choices"]])])
    assert mc2 == pytest.approx(float(torch.softmax(s2, 0)[:2].sum()), abs=1e-6)
    summary = summarise_truthfulqa([{"mc1": mc1, "mc2": mc2}, {"mc1": True, "mc2": 0.5}])
    assert summary["mc1"]["correct"] == 1 + int(mc1)


def test_run_rain_hh_writes_incrementally_and_resumes(tmp_path):
    data = tmp_path / "hh_rlhf_harmless_base_test"
    data.mkdir()
    rows = [{"id": f"x{i}", "prompt": p, "num_human_turns": 1, "chosen": "", "rejected": ""}
            for i, p in enumerate(["Hi there", "Tell me a joke"])]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lm = chars_model(context=4096)
    out = tmp_path / "res.jsonl"
    settings = RunSettings(max_tokens=4, max_iters=2, seed=0, evaluator="regex:e")
    exp = RainHH(settings=settings, judges=["toxicity"], limit=2, data=str(tmp_path))
    loaders = Loaders(model=lambda name, device: lm)
    s = run_experiment(exp, ResultFile(out, "id"), loaders=loaders)
    assert s["items"] == 2 and len(out.read_text().splitlines()) == 2
    rec = json.loads(out.read_text().splitlines()[0])
    assert {"vanilla", "rain", "self_eval", "judges", "iterations", "forward_passes"} <= set(rec)
    assert all(-1 <= v <= 1 for v in rec["self_eval"]) and not math.isnan(rec["judges"]["non-toxic"][0])
    before = lm.counters.snapshot()
    again = RainHH.from_config(json.loads(json.dumps(exp.config())))  # the config travels as JSON
    s2 = run_experiment(again, ResultFile(out, "id"), loaders=loaders)
    assert again.parts is None  # nothing left to do, so nothing was loaded
    assert lm.counters.since(before).forward_passes == 0  # everything was already done
    assert s2["judges"] == s["judges"]


COSTS = ("vanilla_seconds", "rain_seconds", "forward_passes", "batch")  # shares of a batch's cost


def test_batched_rain_hh_records_equal_one_at_a_time(tmp_path):
    """--batch 3 keeps three searches going over four prompts (different lengths); every record but its costs is
    the one --batch 1 writes, and each is written when its search is done."""
    data = tmp_path / "hh_rlhf_harmless_base_test"
    data.mkdir()
    prompts = ["Hi there", "Tell me a joke about cats", "Why?", "How do I bake bread at home?"]
    rows = [{"id": f"x{i}", "prompt": p, "num_human_turns": 1, "chosen": "", "rejected": ""}
            for i, p in enumerate(prompts)]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lm = chars_model(context=4096)
    loaders = Loaders(model=lambda name, device: lm)
    settings = RunSettings(max_tokens=6, max_iters=3, seed=0, evaluator="regex:e")
    out = {}
    for b in (1, 3):
        exp = RainHH(settings=settings, judges=["toxicity"], limit=4, data=str(tmp_path))
        run_experiment(exp, ResultFile(tmp_path / f"b{b}.jsonl", "id"), loaders=loaders, batch=b)
        out[b] = [json.loads(x) for x in (tmp_path / f"b{b}.jsonl").read_text().splitlines()]
    assert {r["batch"] for r in out[3]} == {3} and {r["batch"] for r in out[1]} == {1}
    ids = {b: [r["id"] for r in out[b]] for b in (1, 3)}
    assert ids[1] == ["x0", "x1", "x2", "x3"] and sorted(ids[3]) == ids[1]
    strip = [sorted(({k: v for k, v in r.items() if k not in COSTS} for r in out[b]), key=lambda r: r["id"])
             for b in (1, 3)]
    assert strip[0] == strip[1]
    assert len({r["rain"] for r in out[1]}) > 1 and all(r["iterations"] > 0 for r in out[1])
    # the vanilla side decoded together is each prompt's lm.generate alone
    for r in out[3]:
        alone = lm.generate(r["prompt"], max_tokens=6, top_k=15, seed=0)[0]
        assert (r["vanilla"], r["vanilla_tokens"]) == (alone.text, len(alone.tokens))
