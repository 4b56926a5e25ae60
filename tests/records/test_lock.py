"""One writer per results file: a second process is refused with one sentence naming the first; the file is
untouched; the lock goes away with its holder."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hindsight.errors import HindsightError
from hindsight.records.lock import lock_path, lock_results, release_results

SRC = str(Path(__file__).resolve().parents[2] / "src")
HOLD = "import sys, time; from hindsight.records.lock import lock_results; lock_results(sys.argv[1]); " \
       "print('held', flush=True); time.sleep(60)"


def test_second_writer_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": 1}\n')
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(HindsightError, match=f"process {holder.pid}"):
            lock_results(out)
        assert out.read_text() == '{"id": 1}\n'
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    lock_results(out)  # the holder is gone: free again
    assert lock_path(out).read_text() == str(os.getpid())
    release_results(out)


def test_same_process_may_lock_twice(tmp_path):
    out = tmp_path / "r.jsonl"
    lock_results(out)
    lock_results(out)
    release_results(out)
