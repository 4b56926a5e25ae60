"""``hindsight rain`` rejects bad settings with one line before loading any model."""

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _rain(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hindsight", "rain", *args],
                          env={**os.environ, "PYTHONPATH": SRC, **env}, capture_output=True, text=True, timeout=120)


def _one_line_error(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_bad_task_is_one_line_error():
    _one_line_error(_rain("hello", "--task", "poetry"))


def test_bad_value_rule_is_one_line_error():
    r = _rain("hello", "--value-rule", "majority")
    _one_line_error(r)
    assert "vote" in r.stderr
    assert "--value-rule" in _rain("--help", COLUMNS="200").stdout
