"""Serving throughput: concurrent clients batched together vs the same requests one at a time.

Starts ``hindsight serve`` (a subprocess on 127.0.0.1, packaged model) and drives it with the official
``openai`` client: 8 chat requests of up to 64 new tokens sent by 8 concurrent clients, and the same 8 sent one
after another (same seeds, so the same tokens), interleaved over several rounds (medians: the CPU is shared).
Also 4 concurrent SMC requests (16 particles) vs one at a time, and the same 8 chat requests through the engine
directly (``lm.generate`` in this process), which gives the server's overhead per request.

    OMP_NUM_THREADS=1 python bench/serve.py [--model smollm2-135m] [--rounds 3] [--tokens 64]

Last line: ``RATIO concurrent/serial throughput = X`` (target >= 3.0 on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Write a short story about a lighthouse keeper.",
    "Explain why the sky is blue.",
    "Give me three tips for learning to cook.",
    "What is a prime number? Give examples.",
    "Describe a rainy day in a city.",
    "How do bees make honey?",
    "Write a poem about autumn leaves.",
    "What should I pack for a weekend hike?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | None, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hindsight", "serve", "--port", str(port), "--method-workers", "4"]
    if model:
        cmd += ["--model", model]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server exited during start-up")
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_batch(calls, concurrent: bool) -> tuple[list, float, list[float]]:
    """(results, wall seconds, per-request latencies)."""
    def one(call):
        return timed(call)

    t0 = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(calls)) as pool:
            pairs = list(pool.map(one, calls))
    else:
        pairs = [one(c) for c in calls]
    return [p[0] for p in pairs], time.perf_counter() - t0, [p[1] for p in pairs]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def compare(name: str, calls, rounds: int, count_tokens) -> tuple[float, float, dict]:
    """Interleaved serial/concurrent rounds; returns (median serial s, median concurrent s, latencies)."""
    walls: dict[str, list[float]] = {"serial": [], "concurrent": []}
    lats: dict[str, list[float]] = {"serial": [], "concurrent": []}
    tokens = {}
    for _ in range(rounds):
        for mode in ("serial", "concurrent"):
            res, wall, lat = run_batch(calls, mode == "concurrent")
            walls[mode].append(wall)
            lats[mode].extend(lat)
            tokens[mode] = count_tokens(res)
    if tokens["serial"] != tokens["concurrent"]:
        print(f"  note: {name} serial and concurrent runs returned different token counts {tokens}")
    s, c = statistics.median(walls["serial"]), statistics.median(walls["concurrent"])
    for mode, wall in (("serial", s), ("concurrent", c)):
        print(f"{name} {mode:10s}: {wall:7.2f} s for {tokens[mode]} tokens = {tokens[mode] / wall:7.1f} tok/s; "
              f"latency p50 {pct(lats[mode], 0.5):.2f} s, p95 {pct(lats[mode], 0.95):.2f} s "
              f"(walls {', '.join(f'{w:.1f}' for w in walls[mode])})")
    return s, c, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--smc-tokens", type=int, default=24)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each line as it is measured (a run takes minutes)
    import openai

    sys.path.insert(0, str(ROOT / "src"))
    from hindsight.lm import DEFAULT_MODEL, load_model

    port = free_port()
    proc = start_server(args.model, port)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench", timeout=3600, max_retries=0)
        name = client.models.list().data[0].id
        msgs = [[{"role": "user", "content": q}] for q in QUESTIONS]
        chat = [lambda m=m, i=i: client.chat.completions.create(model=name, messages=m, max_tokens=args.tokens,
                                                                  seed=i) for i, m in enumerate(msgs)]
        chat[0]()  # warm-up
        s, c, toks = compare("chat", chat, args.rounds, lambda rs: sum(r.usage.completion_tokens for r in rs))
        lm = load_model(args.model or DEFAULT_MODEL)
        direct = [lambda m=m, i=i: lm.generate(lm.chat(m), max_tokens=args.tokens, seed=i) for i, m in enumerate(msgs)]
        direct[0]()
        walls = [run_batch(direct, False)[1] for _ in range(args.rounds)]
        d = statistics.median(walls)
        print(f"engine direct (lm.generate, serial): {d:7.2f} s; server overhead per request "
              f"{(s - d) / len(chat) * 1000:+.0f} ms ({(s / d - 1) * 100:+.1f}%)")
        smc_body = {"hindsight": {"method": "smc", "potential": "sentiment:positive", "particles": 16}}
        smc = [lambda m=m, i=i: client.chat.completions.create(
            model=name, messages=m, max_tokens=args.smc_tokens, seed=i, extra_body=smc_body)
            for i, m in enumerate(msgs[:4])]
        smc[0]()
        ss, sc, _ = compare("smc(16)", smc, max(1, args.rounds - 1),
                            lambda rs: sum(r.model_extra["hindsight"]["tokens_computed"] for r in rs))
        print(f"RATIO smc concurrent/serial throughput = {ss / sc:.2f}")
        print(f"settings: model {name}, {len(chat)} chat requests x {args.tokens} tokens max, {args.rounds} rounds, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cpus {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"RATIO concurrent/serial throughput = {s / c:.2f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
