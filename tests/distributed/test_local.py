"""What needs no Ray cluster: the lock on ``--out``, the one sentence without Ray, Ray never imported unasked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hindsight.errors import HindsightError
from hindsight.records.lock import lock_results, release_results
from hindsight.records.results import ResultFile

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def test_a_second_run_on_the_same_out_is_refused_and_the_file_is_untouched(tmp_path):
    """Another process holds the lock (as a running ``hindsight eval`` does); this one is refused at once."""
    path = tmp_path / "r.jsonl"
    ResultFile(path, "key").append({"key": "k0", "v": 1})
    release_results(path)  # a ResultFile keeps its writer lock until the process ends: give it back
    before = path.read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from hindsight.records.lock import lock_results
            with lock_results({str(path)!r}):
                print("locked", flush=True)
                sys.stdin.readline()
        """)], env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(HindsightError, match="is being written by"):
            with lock_results(path):
                ResultFile(path, "key").append({"key": "k1", "v": 2})
        assert path.read_bytes() == before
    finally:
        holder.communicate("\n", timeout=60)
    with lock_results(path):  # released when the holder ended
        ResultFile(path, "key").append({"key": "k1", "v": 2})
    assert [json.loads(x)["key"] for x in path.read_text().splitlines()] == ["k0", "k1"]


def test_workers_without_ray_is_one_sentence_naming_the_extra(monkeypatch):
    from hindsight.cli.scale import scale_of

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with pytest.raises(HindsightError, match=r'pip install "hindsight\[ray\]"') as e:
        scale_of(2, None, 0.0)
    assert "\n" not in str(e.value)
    assert scale_of(None, None, 0.0).distributed is False  # without the flags nothing needs Ray


def test_bad_scale_settings_are_one_sentence():
    from hindsight.distributed import Scale

    for bad, flag in ((Scale(workers=0), "--workers"), (Scale(gpus_per_worker=-1), "--gpus-per-worker"),
                      (Scale(gpus_per_worker=1.5), "--gpus-per-worker")):
        with pytest.raises(HindsightError, match=flag):
            bad.check()


def test_ray_is_not_imported_unless_asked(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import hindsight.cli.app
        from hindsight.cli.scale import run_items, scale_of
        from tests.experiments.test_runner import LOADERS, Squares
        run_items(Squares(n=2), {str(tmp_path / 'r.jsonl')!r}, scale_of(None, None, 0.0), loaders=LOADERS)
        print("ray" in sys.modules)
    """)
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    env = {**_env(), "PYTHONPATH": os.pathsep.join([SRC, root])}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("command", [
    ["eval", "preferences"], ["eval", "retrieval"], ["eval", "citation"], ["eval", "jailbreak"],
    ["eval", "rain-hh"], ["eval", "rain-truthfulqa"], ["bounds", "-p", "toxicity", "--prompt", "hi"],
])
def test_every_command_answers_workers_without_ray_in_one_line(command, monkeypatch, capsys, tmp_path):
    """Checked before any data or model is read: exit 2 and one line naming the extra."""
    from hindsight.cli.app import main

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr(sys, "argv", ["hindsight", *command, "--workers", "2", "--out", str(tmp_path / "o.jsonl")])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and 'pip install "hindsight[ray]"' in err
