"""Progress on a terminal: ``generate``, ``rerank`` and ``smc`` show tokens/s on stderr when it is a terminal (a
real pseudo-terminal here), and nothing when stderr is piped or under ``--json``.

``HINDSIGHT_PROGRESS_DELAY=0`` makes the line appear at once (it normally waits 1.5 s, so quick commands stay
quiet), so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from tests.cli.test_hostile_inputs import command, env

pty = pytest.importorskip("pty")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from hindsight.lm.toy import save_checkpoint, tiny_model

    path = tmp_path_factory.mktemp("tty") / "tiny"
    save_checkpoint(tiny_model(), path)
    return str(path)


def _env() -> dict[str, str]:
    e = env()
    e.update(HINDSIGHT_PROGRESS_DELAY="0", TERM="xterm", COLUMNS="120")
    return e


def run_on_pty(args: list[str], cwd) -> tuple[int, str, str]:
    """Run the console script with stderr on a pseudo-terminal: (exit code, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    stdout = open(cwd / "stdout.txt", "wb")  # a file, not a pipe: a large result must not block the child
    proc = subprocess.Popen(command() + args, cwd=cwd, env=_env(), stdout=stdout, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    stdout.close()
    got = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 600)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            got += chunk
        proc.wait(timeout=600)
        out = (cwd / "stdout.txt").read_bytes()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return proc.returncode, out.decode("utf-8", "replace"), got.decode("utf-8", "replace")


COMMANDS = {
    "generate": ["generate", "hi", "--n", "256", "--max-tokens", "200", "--seed", "0"],
    "rerank": ["rerank", "hi", "--n", "64", "--max-tokens", "100", "--scorer", "forward", "--seed", "0"],
    "smc": ["smc", "hi", "-p", "regex:e", "--particles", "64", "--max-tokens", "100", "--seed", "0"],
}


@pytest.mark.skipif(sys.platform == "win32", reason="no pseudo-terminals")
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_progress_with_tokens_per_second_on_a_terminal(name, tiny, tmp_path):
    rc, out, tty = run_on_pty(COMMANDS[name] + ["--model", tiny], tmp_path)
    assert rc == 0, tty
    assert f"{name}: " in tty and "tokens/s" in tty, tty
    assert "Traceback" not in tty and out.strip()  # the result still goes to stdout


def test_no_progress_when_stderr_is_piped(tiny, tmp_path):
    res = subprocess.run(command() + COMMANDS["generate"] + ["--model", tiny], cwd=tmp_path, env=_env(),
                         capture_output=True)
    err = res.stderr.decode("utf-8", "replace")
    assert res.returncode == 0, err
    assert "tokens/s" not in err and "\x1b[" not in err, err


@pytest.mark.skipif(sys.platform == "win32", reason="no pseudo-terminals")
def test_no_progress_under_json_even_on_a_terminal(tiny, tmp_path):
    import json

    rc, out, tty = run_on_pty(COMMANDS["generate"] + ["--model", tiny, "--json"], tmp_path)
    assert rc == 0, tty
    assert "tokens/s" not in tty and "generate: " not in tty, tty
    assert tty.strip() == "", tty  # not even the model-loading spinner: stderr stays empty
    assert len(json.loads(out)["samples"]) == 256
