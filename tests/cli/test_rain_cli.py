"""``hindsight rain`` rejects bad settings with one line before loading any model."""

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_bad_task_is_one_line_error():
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run([sys.executable, "-m", "hindsight", "rain", "hello", "--task", "poetry"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_bad_value_rule_is_one_line_error():
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run([sys.executable, "-m", "hindsight", "rain", "hello", "--value-rule", "majority"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert "vote" in r.stderr and "Traceback" not in r.stderr
    h = subprocess.run([sys.executable, "-m", "hindsight", "rain", "--help"], env={**env, "COLUMNS": "200"},
                       capture_output=True, text=True, timeout=120)
    assert "--value-rule" in h.stdout
