"""``hindsight rain`` rejects bad settings with one line before loading any model."""

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _rain(*args: str, timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hindsight", "rain", *args],
                          env={**os.environ, "PYTHONPATH": SRC, **env}, capture_output=True, text=True, timeout=timeout)


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


def test_html_view_from_the_command_line(tmp_path):
    """--html writes the page and --tree the JSON of the same search (a tiny local model, no download)."""
    import json

    from hindsight.lm.toy import save_checkpoint, tiny_model
    from hindsight.samplers.rain_html import count_nodes

    model = tmp_path / "tiny"
    save_checkpoint(tiny_model(), model)
    r = _rain("hi there", "--model", str(model), "--evaluator", "toxicity:low", "--max-tokens", "4",
              "--max-iters", "2", "--seed", "0", "--html", str(tmp_path / "t.html"), "--tree", str(tmp_path / "t.json"), timeout=900)
    assert r.returncode == 0, r.stderr
    tree = json.loads((tmp_path / "t.json").read_text())
    page = (tmp_path / "t.html").read_text()
    assert page.count('<li class="node') == count_nodes(tree["root"]) and "<!DOCTYPE html>" in page
    assert page.count('<h3 class="commit">') == len(tree["steps"]) >= 1


def test_bad_batch_is_one_line_error_before_anything_loads(tmp_path):
    for cmd in ("rain-hh", "rain-truthfulqa"):
        r = subprocess.run([sys.executable, "-m", "hindsight", "eval", cmd, "--batch", "0", "--out",
                            str(tmp_path / "r.jsonl"), "--model", str(tmp_path / "no-such-model")],
                           env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=120)
        _one_line_error(r)
        assert "--batch must be at least 1 (got 0)" in r.stderr
        assert not (tmp_path / "r.jsonl").exists()
