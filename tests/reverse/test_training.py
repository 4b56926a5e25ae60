import json

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.lm.toy import tiny_model
from hindsight.reverse.models import ReverseModel, load_reverse_model
from hindsight.reverse.packing import PackedData, read_units, unit_ids
from hindsight.reverse.training import ReverseTrainer, TrainConfig

TEXTS = ["the cat sat on the mat.", "a dog ran in the park, and the dog sat.", "birds sing at dawn; cats sleep."] * 4
PAIRS = [("what sat?", "the cat sat."), ("who ran?", "a dog ran.")]


def _cfg(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), seq_len=48, batch_size=4, lr=3e-3, warmup=2, steps=6,
                checkpoint_every=3, forward_tag="f:", reverse_tag="r:")
    base.update(kw)
    return TrainConfig(**base)


def _trainer(tmp_path, units=TEXTS, accelerate=False, **kw):
    lm = tiny_model(seed=1)
    return ReverseTrainer(_cfg(tmp_path, **kw), units, model=lm.model, tokenizer=lm.tokenizer, accelerate=accelerate)


def test_unit_reversal_round_trips(tiny):
    for unit in [TEXTS[1], PAIRS[0]]:
        fwd, rev = unit_ids(tiny, unit, False), unit_ids(tiny, unit, True)
        assert rev[::-1] == fwd
    q, a = PAIRS[0]
    # a reversed pair is exactly what the trlm-ba scorer reads: rev(A) then rev(Q)
    assert unit_ids(tiny, PAIRS[0], True) == tiny.encode(a)[::-1] + tiny.encode(q)[::-1]
    assert tiny.decode(unit_ids(tiny, "abc", True)) == "cba"


def test_packed_rows_are_reversed_and_foba_alternates(tmp_path, tiny):
    ba = PackedData(tiny, ["abc", "de"], _cfg(tmp_path, mode="ba", seq_len=8))
    ids, mask = ba.batch(1)
    text = tiny.decode(ids[0][mask[0].bool()].tolist(), skip_special_tokens=False)
    assert text in ("cba<eos>ed<eos>", "ed<eos>cba<eos>")
    foba = PackedData(tiny, ["abc", "de"], _cfg(tmp_path, mode="foba", seq_len=9))
    rows = [tiny.decode(foba.batch(1)[0][0].tolist(), skip_special_tokens=False) for _ in range(4)]
    assert [r[:2] for r in rows] == ["f:", "r:", "f:", "r:"]
    assert {r.replace("<eos>", "")[2:] for r in rows[:2]} <= {"abc", "cba", "de", "ed"}


def test_training_lowers_the_loss(tmp_path):
    tr = _trainer(tmp_path, steps=15, checkpoint_every=100)
    held = [tr.data.batch(4)]
    tr.data.load_state({"epoch": 0, "index": 0})
    before = tr.eval_loss(held)
    tr.run()
    assert tr.eval_loss(held) < before - 0.3


def test_resume_reaches_the_same_state(tmp_path):
    full = _trainer(tmp_path / "a")
    full.run()
    part = _trainer(tmp_path / "b")
    part.run(steps=3)  # "interrupted" after the step-3 checkpoint
    resumed = _trainer(tmp_path / "b")  # a fresh process would do exactly this
    assert resumed.resumed_from is not None and resumed.step == 3
    resumed.run()
    assert resumed.step == full.step == 6
    assert resumed.data.state() == full.data.state()
    for (n, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), n
    s1, s2 = full.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg_sq"], s2[k]["exp_avg_sq"]) for k in s1)
    # the final model is a loadable reverse model that knows its mode and tags
    meta = json.loads((tmp_path / "b" / "run" / "model" / "hindsight_reverse.json").read_text())
    assert meta["mode"] == "ba" and meta["step"] == 6
    rev = load_reverse_model(tmp_path / "b" / "run")
    assert isinstance(rev, ReverseModel) and (rev.mode, rev.forward_tag, rev.reverse_tag) == ("ba", "f:", "r:")
    assert rev.name == "run"  # the run's name, not its "model" folder
    assert len(list((tmp_path / "b" / "run" / "checkpoints").iterdir())) == 2  # keep=2


def test_resume_refuses_different_settings(tmp_path):
    _trainer(tmp_path).run(steps=3)
    with pytest.raises(HindsightError, match="mode"):
        _trainer(tmp_path, mode="foba")


def test_pairs_and_bad_settings(tmp_path):
    tr = _trainer(tmp_path, units=PAIRS, mode="foba", steps=2)
    tr.run()
    assert tr.step == 2
    # the FoBa scorer reads the tags the model was trained with, and refuses to be used as a Ba model
    from hindsight.reverse.scorers import make_scorer

    rev = load_reverse_model(tmp_path / "run")
    lm = rev.lm
    got = make_scorer("trlm-foba", lm, reverse_lm=rev).score(["what sat?"], ["the cat sat."])
    q, a = lm.encode("what sat?"), lm.encode("the cat sat.")
    want = lm.score([lm.encode("r:") + a[::-1]], [q[::-1]])[0].double().sum()
    assert float(got.total[0]) == pytest.approx(float(want), abs=1e-4)
    with pytest.raises(HindsightError, match="foba"):
        make_scorer("trlm-ba", lm, reverse_lm=rev)
    with pytest.raises(HindsightError):
        _trainer(tmp_path / "x", mode="sideways")
    with pytest.raises(HindsightError):
        _trainer(tmp_path / "y", steps=0)


def test_read_units(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nsecond doc\n")
    (tmp_path / "b.jsonl").write_text('{"query": "q", "response": "r"}\n{"text": "t"}\n')
    assert read_units([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")]) == ["first doc", "second doc",
                                                                                ("q", "r"), "t"]
    with pytest.raises(HindsightError):
        read_units([str(tmp_path / "missing.txt")])
    (tmp_path / "c.jsonl").write_text('{"other": 1}\n')
    with pytest.raises(HindsightError):
        read_units([str(tmp_path / "c.jsonl")])


def test_accelerate_path_runs_single_process(tmp_path):
    """The code path multi-GPU runs take (accelerate), exercised with one CPU process."""
    tr = _trainer(tmp_path, steps=2, checkpoint_every=2, accelerate=True)
    assert tr.acc is not None
    tr.run()
    assert tr.step == 2 and (tmp_path / "run" / "model" / "config.json").is_file()
