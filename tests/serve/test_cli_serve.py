"""``hindsight serve`` as a process: a checkpoint directory as --model, flags, and SIGTERM draining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.serve.conftest import Raw, free_port, openai, running

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    env.pop("HINDSIGHT_API_KEY", None)
    return env


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from hindsight.lm.toy import save_checkpoint, tiny_model

    path = tmp_path_factory.mktemp("ckpt") / "tiny-ckpt"
    save_checkpoint(tiny_model(), path)
    return path


def _start(checkpoint: Path, *flags: str) -> tuple[subprocess.Popen, Raw]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hindsight", "serve", "--model", str(checkpoint), "--port",
                             str(port), *flags], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    raw = Raw(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        try:
            if raw.get("/health").status == 200:
                return proc, raw
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not come up")


def test_sigterm_finishes_running_requests_then_exits(checkpoint):
    proc, raw = _start(checkpoint, "--api-key", "k")
    try:
        out = {}
        body = {"model": "tiny-ckpt", "prompt": "x", "max_tokens": 100, "seed": 33, "stream": True}

        def stream() -> None:
            conn = raw.connect()
            conn.request("POST", "/v1/completions", body=json.dumps(body),
                         headers={"Content-Type": "application/json", "Authorization": "Bearer k"})
            out["rest"] = conn.getresponse().read().decode()

        t = threading.Thread(target=stream)
        t.start()
        deadline = time.monotonic() + 300
        while raw.get("/health").json()["active_rows"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the request is decoding
        proc.send_signal(signal.SIGTERM)
        t.join(600)
        assert out["rest"].rstrip().endswith("data: [DONE]")  # the running request was finished
        chunks = [json.loads(e[6:]) for e in out["rest"].split("\n\n") if e.startswith("data: {")]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert proc.wait(300) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
        with pytest.raises(OSError):
            raw.get("/health")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_flags_are_one_sentence(checkpoint):
    for flags, words in ((["--twist", "../x=/nope"], "Twist name"), (["--twist", "t=/does/not/exist.pt"],
                                                                     "does not exist")):
        r = subprocess.run([sys.executable, "-m", "hindsight", "serve", "--model", str(checkpoint), *flags],
                           env=_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr


def test_a_registered_twist_is_usable_by_name(lm, tmp_path):
    from hindsight.twists.checkpoint import save_twist
    from hindsight.twists.heads import make_head

    head = make_head("linear", lm.hidden_size, lm.vocab_size)
    save_twist(tmp_path / "t.pt", head, {"model": lm.name})
    with running(lm, twists={"pos": str(tmp_path / "t.pt")}) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                      extra_body={"hindsight": {"method": "smc", "potential": "keywords:a",
                                                                "twist": "pos", "particles": 4}})
        assert r.model_extra["hindsight"]["twist"] == "pos"


@pytest.mark.slow
def test_the_packaged_model_serves_chat():
    from hindsight.lm import load_model
    from hindsight.lm.registry import DEFAULT_MODEL, is_cached

    if not is_cached(DEFAULT_MODEL):
        pytest.skip("the packaged model is not cached")
    lm = load_model(DEFAULT_MODEL)
    with running(lm) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        msgs = [{"role": "user", "content": "Name a colour."}]
        a = c.chat.completions.create(model=DEFAULT_MODEL, messages=msgs, max_tokens=12, n=2, seed=0)
        want = lm.generate(lm.chat(msgs), n=2, max_tokens=12, seed=0)
        assert [ch.message.content for ch in a.choices] == [s.text for s in want]
        streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model=DEFAULT_MODEL, messages=msgs, max_tokens=12, seed=0, stream=True))
        assert streamed == lm.generate(lm.chat(msgs), max_tokens=12, seed=0)[0].text
