"""Every bad request is a 4xx with the OpenAI error object naming what is wrong; never a 500."""

from __future__ import annotations

import threading

import pytest

from tests.serve.conftest import Raw, openai, running, wait_for

CHAT = [{"role": "user", "content": "hi"}]


def _chat(**fields):
    return {"model": "tiny", "messages": CHAT, "max_tokens": 4, **fields}


def _smc(**settings):
    return _chat(hindsight={"method": "smc", "potential": "keywords:a", **settings})


CASES = [
    ("malformed json", b"{not json", 400, None, "invalid_json"),
    ("not an object", b"[1, 2]", 400, None, "invalid_json"),
    ("missing model", {"messages": CHAT}, 400, "model", "missing_required_parameter"),
    ("messages wrong type", {"model": "tiny", "messages": "hi"}, 400, "messages", "invalid_type"),
    ("bad role", {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", "invalid_value"),
    ("n is a string", _chat(n="2"), 400, "n", "invalid_type"),
    ("n is a bool", _chat(n=True), 400, "n", "invalid_type"),
    ("n too large", _chat(n=1000), 400, "n", "invalid_value"),
    ("n zero", _chat(n=0), 400, "n", "invalid_value"),
    ("max_tokens zero", _chat(max_tokens=0), 400, "max_tokens", "invalid_value"),
    ("max_tokens too large", _chat(max_tokens=10**6), 400, "max_tokens", "invalid_value"),
    ("temperature negative", _chat(temperature=-1), 400, "temperature", "invalid_value"),
    ("top_p zero", _chat(top_p=0), 400, "top_p", "invalid_value"),
    ("stop too many", _chat(stop=["a", "b", "c", "d", "e"]), 400, "stop", "invalid_value"),
    ("unknown field", _chat(frobnicate=1), 400, "frobnicate", "unknown_parameter"),
    ("unknown model", {**_chat(), "model": "gpt-4"}, 404, "model", "model_not_found"),
    ("model given as a path", {**_chat(), "model": "/tmp/tiny"}, 404, "model", "model_not_found"),
    ("unknown method", _chat(hindsight={"method": "magic"}), 400, "hindsight.method", "invalid_value"),
    ("hindsight not an object", _chat(hindsight="smc"), 400, "hindsight", "invalid_type"),
    ("unknown method setting", _smc(particle=3), 400, "hindsight.particle", "invalid_value"),
    ("particles wrong type", _smc(particles="many"), 400, "hindsight.particles", "invalid_value"),
    ("particles over the server's bound", _smc(particles=10**6), 400, "hindsight.particles", "invalid_value"),
    ("particles zero", _smc(particles=0), 400, "hindsight.particles", "invalid_value"),
    ("setting owned by the OpenAI body", _smc(max_tokens=3), 400, "hindsight.max_tokens", "unknown_parameter"),
    ("unknown potential", _chat(hindsight={"method": "smc", "potential": "nonsense"}), 400, "hindsight.potential",
     "invalid_value"),
    ("smc without potential", _chat(hindsight={"method": "smc"}), 400, "hindsight.potential", "invalid_value"),
    ("unknown twist", _smc(twist="nope"), 400, "hindsight.twist", "invalid_value"),
    ("twist as a relative path", _smc(twist="../../x"), 400, "hindsight.twist", "invalid_value"),
    ("twist as an absolute path", _smc(twist="/etc/passwd"), 400, "hindsight.twist", "invalid_value"),
    ("unknown scorer", _chat(hindsight={"method": "best_of_n", "scorer": "oracle"}), 400, "hindsight.scorer",
     "invalid_value"),
    ("smc refuses streaming", {**_smc(), "stream": True}, 400, "stream", "unsupported_parameter"),
    ("rain takes one answer", _chat(n=2, hindsight={"method": "rain"}), 400, "n", "invalid_value"),
    ("prompt longer than the context", _chat(messages=[{"role": "user", "content": "a" * 300}]), 400, "max_tokens",
     "context_length_exceeded"),
]


@pytest.mark.parametrize("body,status,param,code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_requests(raw, body, status, param, code):
    r = raw.post("/v1/chat/completions", body)
    assert r.status == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["code"] == code
    assert isinstance(err["message"], str) and err["message"] and "Traceback" not in err["message"]


def test_completions_specific_errors(raw):
    r = raw.post("/v1/completions", {"model": "tiny", "prompt": 5})
    assert r.status == 400 and r.json()["error"]["param"] == "prompt"
    r = raw.post("/v1/completions", {"model": "tiny", "prompt": "x", "hindsight": {"method": "rain"}})
    assert r.status == 400 and "chat/completions" in r.json()["error"]["message"]


def test_unknown_route_and_wrong_verb_are_error_objects(raw):
    r = raw.get("/v1/nothing")
    assert r.status == 404 and r.json()["error"]["code"] == "not_found"
    r = raw.get("/v1/chat/completions")
    assert r.status == 405 and "error" in r.json()


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=CHAT)
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=CHAT, extra_body={"hindsight": {"method": "x"}})
    assert e.value.body["param"] == "hindsight.method"


def test_body_over_the_limit_is_413(lm):
    with running(lm, max_body_bytes=2000) as url:
        raw = Raw(url)
        r = raw.post("/v1/chat/completions", _chat(messages=[{"role": "user", "content": "a" * 5000}]))
        assert r.status == 413 and r.json()["error"]["code"] == "request_too_large"
        assert raw.post("/v1/chat/completions", _chat()).status == 200


def test_api_key_is_required_on_v1_routes(lm):
    with running(lm, api_key="s3cret") as url:
        raw = Raw(url)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            r = raw.post("/v1/chat/completions", _chat(), headers=headers)
            assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert raw.get("/v1/models").status == 401
        assert raw.get("/health").status == 200
        good = {"Authorization": "Bearer s3cret"}
        assert raw.get("/v1/models", headers=good).status == 200
        c = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()


def test_full_queue_is_429_with_retry_after(lm):
    with running(lm, max_batch_rows=1, max_queue=1) as url:
        raw = Raw(url)
        long_ = {"model": "tiny", "prompt": "x", "max_tokens": 100, "seed": 33}  # no EOS for 120 tokens
        results = []
        threads = [threading.Thread(target=lambda: results.append(raw.post("/v1/completions", long_)))
                   for _ in range(2)]
        threads[0].start()
        assert wait_for(lambda: raw.get("/health").json()["active_rows"] == 1)
        threads[1].start()
        assert wait_for(lambda: raw.get("/health").json()["waiting"] == 1)
        r = raw.post("/v1/completions", long_)
        assert r.status == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "rate_limit_error"
        for t in threads:
            t.join(120)
        assert [x.status for x in results] == [200, 200]


def test_a_failing_potential_fails_its_request_alone(lm, monkeypatch):
    import torch

    from hindsight.potentials import spec
    from hindsight.potentials.base import Potential

    class Broken(Potential):
        name = "broken"

        def _log_phi(self, texts, tokens):
            return torch.full((len(texts),), float("nan"))

    monkeypatch.setitem(spec.BUILDERS, "broken", lambda arg, **_: Broken())
    with running(lm, method_workers=2) as url:
        raw = Raw(url)
        out = {}
        bad = threading.Thread(target=lambda: out.setdefault("bad", raw.post(
            "/v1/chat/completions", _chat(hindsight={"method": "smc", "potential": "broken", "particles": 4}))))
        bad.start()
        good = raw.post("/v1/chat/completions", _chat(max_tokens=8))
        bad.join(120)
        assert good.status == 200
        assert out["bad"].status == 500 and "NaN" in out["bad"].json()["error"]["message"]
        assert raw.get("/health").json()["status"] == "ok"
        assert raw.post("/v1/chat/completions", _smc(particles=4)).status == 200
