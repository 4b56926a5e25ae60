"""The CLI in-process: every user mistake is one line on stderr and exit code 2, never a traceback."""

import json
import sys

import pytest

from hindsight.cli.app import main
from hindsight.lm.toy import save_checkpoint, tiny_model


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hindsight", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    save_checkpoint(tiny_model(), path)
    return str(path)


def test_generate_json(tiny_dir, capsys, monkeypatch):
    code, out, err = run_cli(["generate", "hello", "--model", tiny_dir, "--n", "3", "--max-tokens", "5",
                              "--seed", "1", "--json"], capsys, monkeypatch)
    assert code == 0, err
    obj = json.loads(out)
    assert len(obj["samples"]) == 3
    for s in obj["samples"]:
        assert set(s) >= {"text", "tokens", "logprob"}
        assert 1 <= len(s["tokens"]) <= 5 and s["logprob"] < 0
    code2, out2, _ = run_cli(["generate", "hello", "--model", tiny_dir, "--n", "3", "--max-tokens", "5",
                              "--seed", "1", "--json"], capsys, monkeypatch)
    assert json.loads(out2)["samples"] == obj["samples"]


def test_generate_table(tiny_dir, capsys, monkeypatch):
    code, out, err = run_cli(["generate", "hello", "--model", tiny_dir, "--max-tokens", "4"], capsys, monkeypatch)
    assert code == 0, err
    assert "log p" in out and "tiny" in out


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["generate", ""], "empty"),
        (["generate", "hi", "--n", "0"], "--n"),
        (["generate", "hi", "--max-tokens", "0"], "--max-tokens"),
        (["generate", "x" * 400], "context"),
        (["generate", "hi", "--model", "no-such-model"], "Unknown model"),
        (["generate", "hi", "--temperature", "-1"], "--temperature"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, phrase, tiny_dir, capsys, monkeypatch):
    if "--model" not in args:
        args = [*args, "--model", tiny_dir]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and phrase in lines[0], err
    assert "Traceback" not in err


def test_directory_that_is_not_a_checkpoint(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("not a model")
    code, _, err = run_cli(["generate", "hi", "--model", str(tmp_path)], capsys, monkeypatch)
    assert code == 2 and "not a transformers checkpoint" in err and len(err.strip().splitlines()) == 1


def test_models_lists_the_default(capsys, monkeypatch):
    code, out, _ = run_cli(["models", "--json"], capsys, monkeypatch)
    assert code == 0
    obj = json.loads(out)
    assert [m["name"] for m in obj["models"] if m["default"]] == ["smollm2-135m"]
