"""The shipped recipe (``--preset tiny``) end to end, shortened: train on the local data, then score with it."""

import json
import sys

import pytest

from hindsight.cli.app import main
from tests.conftest import default_model_available


@pytest.mark.slow
def test_tiny_preset_trains_resumes_and_scores(data_root, tmp_path, monkeypatch, capsys):
    if not default_model_available():
        pytest.skip("the tiny preset borrows the packaged model's tokenizer")
    out = tmp_path / "tiny-ba"

    def cli(*args):
        monkeypatch.setattr(sys, "argv", ["hindsight", *args])
        main()
        return capsys.readouterr().out

    common = ["reverse", "train", "--preset", "tiny", "--out", str(out), "--max-units", "60", "--seq-len", "64",
              "--batch-size", "2", "--checkpoint-every", "2", "--data-dir", str(data_root), "--json"]
    first = json.loads(cli(*common, "--steps", "2"))
    assert first["step"] == 2 and (out / "checkpoints" / "step-0000002").is_dir()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)
    assert json.loads(cli(*common, "--steps", "3"))["step"] == 3  # resumed from step 2, not from scratch
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3]
    res = json.loads(cli("score", "what is a cell?", "a cell is the unit of life.", "--scorer", "trlm-ba",
                         "--reverse-model", str(out), "--json"))
    assert res["tokens"] > 0 and res["total"] < 0
