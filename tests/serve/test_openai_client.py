"""The official openai client against a real server: chat, completions, n, seeds, streaming, every method."""

from __future__ import annotations

import json

import pytest

from tests.serve.conftest import metric

CHAT = [{"role": "user", "content": "hello there"}]


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_completions_are_exactly_the_library_samples(client, lm):
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=12, n=3, seed=7, temperature=0.9)
    want = lm.generate("the cat", n=3, max_tokens=12, seed=7, temperature=0.9, use_chat=False)
    assert [c.text for c in r.choices] == [s.text for s in want]
    assert r.object == "text_completion" and [c.index for c in r.choices] == [0, 1, 2]
    body = [[t for t in s.tokens if t not in lm.eos_token_ids] for s in want]
    assert r.usage.prompt_tokens == len(lm.encode("the cat"))
    assert r.usage.completion_tokens == sum(len(b) for b in body)
    got_lp = [c["logprob"] for c in r.model_extra["hindsight"]["choices"]]
    assert got_lp == pytest.approx([s.logprob for s in want], abs=1e-4)


def test_chat_n_seed_and_logprobs(client, lm):
    kw = dict(model="tiny", messages=CHAT, max_tokens=10, n=2, seed=3, logprobs=True, top_logprobs=2)
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    want = lm.generate(lm.chat(CHAT), n=2, max_tokens=10, seed=3)
    assert [c.message.content for c in a.choices] == [s.text for s in want]
    assert a.choices[0].message.role == "assistant"
    returned = sum(len(c.logprobs.content) for c in a.choices)
    assert a.usage.completion_tokens == returned == sum(h["tokens"] for h in a.model_extra["hindsight"]["choices"])
    for c in a.choices:
        assert "".join(t.token for t in c.logprobs.content) == c.message.content
        assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
                   for t in c.logprobs.content)
    other = client.chat.completions.create(**{**kw, "seed": 4})
    assert [c.message.content for c in other.choices] != [c.message.content for c in a.choices]


def test_greedy_stop_and_length(client, lm):
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=5, temperature=0)
    want = lm.generate("abc", max_tokens=5, temperature=0, use_chat=False)[0]
    assert r.choices[0].text == want.text
    assert r.choices[0].finish_reason == ("length" if want.finish_reason == "length" else "stop")
    stop = want.text[2:4]
    cut = client.completions.create(model="tiny", prompt="abc", max_tokens=5, temperature=0, stop=[stop])
    assert cut.choices[0].text == want.text[: want.text.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_streaming_gives_the_same_text_and_ends_with_done(client, raw):
    kw = dict(model="tiny", messages=CHAT, max_tokens=16, n=2, seed=11)
    whole = client.chat.completions.create(**kw)
    parts = {0: "", 1: ""}
    finish = {}
    for ch in client.chat.completions.create(**kw, stream=True):
        for c in ch.choices:
            parts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert [parts[0], parts[1]] == [c.message.content for c in whole.choices]
    assert finish == {c.index: c.finish_reason for c in whole.choices}
    r = raw.post("/v1/completions", {"model": "tiny", "prompt": "abc", "max_tokens": 6, "stream": True,
                                     "stream_options": {"include_usage": True}})
    events = [e for e in r.text.split("\n\n") if e.strip()]
    assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2].removeprefix("data: "))
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == last["hindsight"]["choices"][0]["tokens"]


def test_smc_through_extra_body(client):
    r = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, n=2, seed=5,
        extra_body={"hindsight": {"method": "smc", "potential": "keywords:a", "particles": 8}})
    h = r.model_extra["hindsight"]
    assert h["method"] == "smc" and len(h["particles"]) == 8 and len(h["ess"]) >= 1
    assert sum(p["weight"] for p in h["particles"]) == pytest.approx(1.0, abs=1e-6)
    texts = [p["text"] for p in h["particles"]]
    assert [c.message.content for c in r.choices] == [texts[c["particle"]] for c in h["choices"]]
    assert h["forward_passes"] >= 2 and h["log_z"] is None or isinstance(h["log_z"], float)
    assert r.usage.completion_tokens == sum(c["tokens"] for c in h["choices"])
    again = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, n=2, seed=5,
        extra_body={"hindsight": {"method": "smc", "potential": "keywords:a", "particles": 8}})
    assert again.model_extra["hindsight"]["particles"] == h["particles"]


def test_best_of_n_through_extra_body(client):
    r = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, n=2, seed=2,
        extra_body={"hindsight": {"method": "best_of_n", "scorer": "trlm-fo", "candidates": 4}})
    h = r.model_extra["hindsight"]
    scores = [c["score"] for c in h["candidates"]]
    assert h["method"] == "best_of_n" and len(scores) == 4
    assert [c["score"] for c in h["choices"]] == sorted(scores, reverse=True)[:2]
    assert [c.message.content for c in r.choices] == [h["candidates"][c["candidate"]]["text"] for c in h["choices"]]
    assert r.usage.completion_tokens == sum(c["tokens"] for c in h["choices"])


def test_rain_through_extra_body_and_its_stream(client):
    hs = {"method": "rain", "evaluator": "keywords:a", "max_iters": 2}
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, seed=1, extra_body={"hindsight": hs})
    h = r.model_extra["hindsight"]
    assert h["method"] == "rain" and h["iterations"] >= 1 and h["forward_passes"] > 0
    assert r.usage.completion_tokens == h["choices"][0]["tokens"]
    text = "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=4, seed=1, stream=True, extra_body={"hindsight": hs}))
    assert text == r.choices[0].message.content


def test_plain_sampling_reports_to_metrics(client, raw):
    before = metric(raw, "hindsight_completion_tokens_total")
    r = client.completions.create(model="tiny", prompt="ab", max_tokens=3, seed=1)
    assert metric(raw, "hindsight_completion_tokens_total") == before + r.usage.completion_tokens
    text = raw.get("/metrics").text
    for name in ("hindsight_requests_total", "hindsight_queue_depth", "hindsight_active_rows",
                 "hindsight_forward_passes_total", "hindsight_request_seconds_bucket", "hindsight_prompt_tokens"):
        assert name in text
    assert 'route="/v1/completions",status="200"' in text
