"""The smc / twist train / bounds commands end to end on the toy model saved as a local checkpoint."""

import json

import pytest
from typer.testing import CliRunner

from hindsight.cli.app import app
from tests.toy_task import one_thread  # noqa: F401

runner = CliRunner()


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory, toy):
    path = tmp_path_factory.mktemp("toy")
    toy.model.save_pretrained(path)
    toy.tokenizer.save_pretrained(path)
    return str(path)


def _run(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_smc_json(toy_dir):
    out = json.loads(_run(["smc", "ab", "--raw", "-m", toy_dir, "-p", "regex:cc", "-n", "8", "--max-tokens", "4",
                           "--seed", "1", "--json"]))
    assert len(out["samples"]) == 8 and abs(sum(s["weight"] for s in out["samples"]) - 1) < 1e-9
    assert set(out) >= {"log_z", "ess", "samples"}


def test_twist_train_then_smc_and_bounds(toy_dir, tmp_path):
    twist = tmp_path / "t.pt"
    common = ["-p", "regex:cc", "--prompt", "ab", "--raw", "-m", toy_dir, "--max-tokens", "4"]
    _run(["twist", "train", *common, "--out", str(twist), "--steps", "8", "--batch", "16", "--lr", "0.01"])
    assert twist.exists() and twist.with_suffix(".png").exists()
    out = _run(["twist", "train", *common, "--out", str(twist), "--steps", "12", "--batch", "16"])  # resumes
    assert "(12 steps" in " ".join(out.split())
    fudge = tmp_path / "f.pt"
    _run(["twist", "train", *common, "--out", str(fudge), "--steps", "4", "--batch", "16", "--method", "fudge"])
    out = json.loads(_run(["smc", "ab", "--raw", "-m", toy_dir, "-p", "regex:cc", "-n", "4", "--max-tokens", "4",
                           "--twist", str(twist), "--json"]))
    assert len(out["samples"]) == 4
    plot = tmp_path / "b.png"
    rep = json.loads(_run(["bounds", *common, "--samplers", "bootstrap,twisted,baseline", "--twist", str(twist),
                           "--baseline-twist", str(fudge), "--particles", "2,4", "--seeds", "2",
                           "--kl-samples", "8", "--plot", str(plot), "--out", str(tmp_path / "b.jsonl"),
                           "--json"]))
    assert len(rep["rows"]) == 6 and len(rep["kl"]) == 3 and plot.exists()
    for r in rep["rows"]:
        lower = r["lower"]["mean"]  # strict JSON: -inf (no particle reached phi > 0) is null, named in "nonfinite"
        assert lower is None and "nonfinite" in rep or lower <= r["upper"]["mean"] + 1.0


def test_tied_twist_trained_on_a_pool_from_the_command_line(toy_dir, tmp_path):
    import torch

    from hindsight.errors import HindsightError

    twist = tmp_path / "tied.pt"
    common = ["-p", "regex:cc", "--prompt", "ab", "--raw", "-m", toy_dir, "--max-tokens", "4"]
    _run(["twist", "train", *common, "--out", str(twist), "--head", "tied", "--rank", "0", "--proposal", "pool",
          "--batch", "256", "--steps", "6", "--inner", "3", "--lr", "0.05", "--vocab-rows", "8", "--vocab-batch", "4"])
    blob = torch.load(twist, weights_only=True)
    assert blob["config"]["kind"] == "tied" and blob["config"]["rank"] == 0
    assert "embeddings" not in blob["state_dict"]  # the model's embeddings are not copied into the file
    assert float(blob["state_dict"]["direction"].abs().sum()) > 0  # it learned something
    # resumes (the pool is drawn again), now keeping the head with the lowest loss on a held-out quarter of it
    out = _run(["twist", "train", *common, "--out", str(twist), "--head", "tied", "--rank", "0", "--proposal",
                "pool", "--batch", "256", "--steps", "9", "--inner", "3", "--holdout", "0.25"])
    assert "(9 steps" in " ".join(out.split()) and "kept the head of step" in " ".join(out.split())
    res = runner.invoke(app, ["twist", "train", *common, "--out", str(tmp_path / "none.pt"), "--proposal", "pool",
                              "--batch", "8", "-p", "regex:zzz"])
    assert isinstance(res.exception, HindsightError) and "pool of 8" in str(res.exception)
    out = json.loads(_run(["smc", "ab", "--raw", "-m", toy_dir, "-p", "regex:cc", "-n", "4", "--max-tokens", "4",
                           "--twist", str(twist), "--json"]))
    assert len(out["samples"]) == 4


def test_user_errors_are_one_line(toy_dir, tmp_path):
    from hindsight.errors import HindsightError

    res = runner.invoke(app, ["bounds", "-p", "regex:c", "--prompt", "ab", "--raw", "-m", toy_dir,
                              "--samplers", "twisted"])
    assert isinstance(res.exception, HindsightError) and "--twist" in str(res.exception)
    res = runner.invoke(app, ["smc", "ab", "--raw", "-m", toy_dir, "-p", "regex:c", "--twist", str(tmp_path / "x")])
    assert isinstance(res.exception, HindsightError) and "does not exist" in str(res.exception)


def test_memory_twist_from_the_command_line(toy_dir, tmp_path):
    import torch

    from hindsight.errors import HindsightError

    twist = tmp_path / "memory.pt"
    common = ["-p", "regex:c", "--prompt", "ab", "--raw", "-m", toy_dir, "--max-tokens", "4"]
    _run(["twist", "train", *common, "--out", str(twist), "--head", "tied", "--rank", "0", "--memory",
          "--batch", "64", "--steps", "6", "--inner", "3", "--lr", "0.05"])
    blob = torch.load(twist, weights_only=True)
    assert blob["config"]["memory"] is True and "mem_scale" in blob["state_dict"]
    assert float(blob["state_dict"]["direction"].abs().sum()) > 0  # it learned something
    out = json.loads(_run(["smc", "ab", "--raw", "-m", toy_dir, "-p", "regex:c", "-n", "4", "--max-tokens", "4",
                           "--twist", str(twist), "--json"]))
    assert len(out["samples"]) == 4 and all(s["weight"] >= 0 for s in out["samples"])
    res = runner.invoke(app, ["twist", "train", *common, "--out", str(tmp_path / "bad.pt"), "--head", "linear",
                              "--memory"])
    assert isinstance(res.exception, HindsightError) and "--memory needs --head tied" in str(res.exception)


def test_bounds_records_carry_the_weights_and_other_weights_get_runs_of_their_own(tmp_path):
    """Two checkpoints with the same folder name (so the same model name) on one --out: the second run is
    computed into its own keys, never read back from the first one's records."""
    from hindsight.lm.toy import toy_model

    dirs = []
    for seed in (0, 1):
        d = tmp_path / f"m{seed}" / "model"
        lm = toy_model(seed=seed + 5)
        lm.model.save_pretrained(d)
        lm.tokenizer.save_pretrained(d)
        dirs.append(str(d))
    out = tmp_path / "b.jsonl"
    common = ["bounds", "-p", "regex:c", "--prompt", "ab", "--raw", "--samplers", "bootstrap", "--particles", "2",
              "--seeds", "2", "--kl-samples", "2", "--max-tokens", "3", "--out", str(out), "--json"]

    def runs():
        recs = [json.loads(line) for line in out.read_text().splitlines()]
        return [r for r in recs if "lower" in r]

    first = json.loads(_run([*common, "-m", dirs[0]]))
    one = runs()
    assert len(one) == 2 and all(r["produced_by"]["model_weights"] for r in one)
    again = json.loads(_run([*common, "-m", dirs[0]]))  # the same weights: read back, nothing new
    assert runs() == one and again["rows"] == first["rows"]
    _run([*common, "-m", dirs[1]])
    both = runs()
    assert len(both) == 4 and {r["id"] for r in both[2:]}.isdisjoint(r["id"] for r in one)
    assert both[2]["produced_by"]["model_weights"] != one[0]["produced_by"]["model_weights"]
