"""Bounded load (200 requests, 16 clients, 10% malformed) and clients that go away mid-stream."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

from tests.serve.conftest import metric, wait_for

SEEDS = [1, 2, 3, 4, 5]
LONG = {"model": "tiny", "prompt": "x", "max_tokens": 200, "seed": 33}  # 120 tokens before the tiny model's EOS
MALFORMED = [b"{broken", {"model": "tiny"}, {"model": "other", "prompt": "x"}, {"model": "tiny", "prompt": "x", "n": 99},
             {"model": "tiny", "prompt": "x", "max_tokens": "8"},
             {"model": "tiny", "prompt": "x", "hindsight": {"method": "smc", "potential": "??"}}]


def test_two_hundred_requests_from_sixteen_clients(raw, lm):
    rng = random.Random(0)
    plan = []
    for i in range(200):
        if i % 10 == 3:
            plan.append(("bad", MALFORMED[i % len(MALFORMED)]))
        else:
            seed = rng.choice(SEEDS)
            plan.append((seed, {"model": "tiny", "prompt": "load test", "max_tokens": 4, "seed": seed, "n": 1 + i % 2}))
    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda item: raw.post("/v1/completions", item[1]), plan))
    assert time.monotonic() - t0 < 900
    statuses = [r.status for r in replies]
    assert not [s for s in statuses if s >= 500]
    want = {(s, n): [x.text for x in lm.generate("load test", n=n, max_tokens=4, seed=s, use_chat=False)]
            for s in SEEDS for n in (1, 2)}
    for (seed, body), r in zip(plan, replies):
        if seed == "bad":
            assert 400 <= r.status < 500 and "error" in r.json()
            continue
        assert r.status == 200, r.text
        got = r.json()
        assert [c["text"] for c in got["choices"]] == want[(seed, body["n"])]
        assert got["usage"]["completion_tokens"] == sum(c["tokens"] for c in got["hindsight"]["choices"])
    assert sum(400 <= s < 500 for s in statuses) == 20
    health = raw.get("/health")
    assert health.status == 200 and health.json()["status"] == "ok"
    assert wait_for(lambda: metric(raw, "hindsight_active_rows") == 0, 10)
    assert metric(raw, "hindsight_queue_depth") == 0


def test_disconnect_mid_stream_frees_the_rows(raw):
    assert wait_for(lambda: metric(raw, "hindsight_active_rows") == 0, 10)
    conn = raw.connect()
    conn.request("POST", "/v1/completions", body=json.dumps(LONG | {"stream": True}),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(6):  # a few chunks arrive: the row is decoding
        assert resp.fp.readline()
    assert metric(raw, "hindsight_active_rows") == 1
    passes = metric(raw, "hindsight_forward_passes_total")
    conn.sock.shutdown(2)
    conn.close()
    assert wait_for(lambda: metric(raw, "hindsight_active_rows") == 0, 10)
    assert metric(raw, "hindsight_forward_passes_total") - passes <= 10  # dropped within a few steps, not 200


def test_disconnect_while_waiting_for_a_whole_answer(raw):
    conn = raw.connect()
    conn.request("POST", "/v1/completions", body=json.dumps(LONG), headers={"Content-Type": "application/json"})
    assert wait_for(lambda: metric(raw, "hindsight_active_rows") == 1, 10)
    conn.sock.shutdown(2)
    conn.close()
    assert wait_for(lambda: metric(raw, "hindsight_active_rows") == 0, 10)
