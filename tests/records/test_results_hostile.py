"""Results files that are not ours are refused with one sentence and left byte-identical."""

import pytest

from hindsight.errors import HindsightError
from hindsight.experiments.runner import ModelExperiment
from hindsight.records.lock import release_results
from hindsight.records.results import ResultFile


class TwoItems(ModelExperiment):
    """An experiment of ``limit`` (default 2) items that needs no model: only its records' stamps matter."""

    key_field = "id"

    def items(self):
        return [{"id": i} for i in range(getattr(self, "limit", None) or 2)]

    def setup(self, loaders):
        return {}

    def run_item(self, item):
        return {"id": item["id"], "score": 0.5}

    def summarise(self, records):
        return len(records)


@pytest.mark.parametrize("content,match", [
    (b'{"id": 1}\n42\n{"id": 2}\n', "line 2 is not a record"),
    (b'{"id": 1}\n\xff\xfe garbage\n{"id": 2}\n', "not UTF-8"),
    (b'{"id": 1}\nnot json\n{"id": 2}\n', "line 2 is not valid JSON"),
    (b'[1, 2]\n', "line 1 is not a record"),
])
def test_bad_results_file_is_one_sentence_and_untouched(tmp_path, content, match):
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    with pytest.raises(HindsightError, match=match):
        ResultFile(path)
    assert path.read_bytes() == content
    release_results(path)


def test_out_is_a_folder(tmp_path):
    with pytest.raises(HindsightError, match="is a folder"):
        ResultFile(tmp_path)


def test_interrupted_last_line_is_still_dropped(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2, "x"')
    rf = ResultFile(path)
    assert rf.keys() == ["1"]
    release_results(path)


def test_records_of_another_model_are_refused(tmp_path, monkeypatch):
    """A rerun with another --model on the same --out stops before any work instead of mixing scores."""
    from hindsight.experiments import runner

    stamps = {"a": "1111", "b": "2222"}
    monkeypatch.setattr(runner, "weights_fingerprint", lambda name: stamps[name])

    path = tmp_path / "r.jsonl"
    assert runner.run_experiment(TwoItems(model="a"), path) == 2
    before = path.read_bytes()
    assert b'"produced_by": {"model": "a", "model_weights": "1111", "reverse_model": null}' in before
    with pytest.raises(HindsightError, match=r"model='a' \(weights 1111\), not 'b' \(weights 2222\)"):
        runner.run_experiment(TwoItems(model="b"), path)
    assert path.read_bytes() == before
    assert runner.run_experiment(TwoItems(model="a"), path) == 2  # same model: resumes, nothing redone
    assert path.read_bytes() == before


def test_records_of_other_score_changing_settings_are_refused_but_neutral_ones_resume(tmp_path, monkeypatch):
    """Provenance covers the settings that change a record (max words, a prompt variant, ...), not those that only
    choose which items run (limit, data, device); the same weights under another name are the same model."""
    from dataclasses import dataclass

    from hindsight.experiments import runner

    stamps = {"a": "1111", "copy-of-a": "1111", "b": "2222"}
    monkeypatch.setattr(runner, "weights_fingerprint", lambda name: stamps[name])

    @dataclass
    class Exp(TwoItems):
        max_words: int = 200
        variant: str = "trlm-fo"
        limit: int | None = None
        threshold: float = 0.5

        provenance_ignores = ("threshold",)

    path = tmp_path / "r.jsonl"
    assert runner.run_experiment(Exp(model="a"), path) == 2
    before = path.read_bytes()
    assert b'"settings": {"max_words": 200, "variant": "trlm-fo"}' in before
    for changed, match in ((dict(max_words=100), "max_words=200, not 100"),
                           (dict(variant="trlm-fo@bare"), "variant='trlm-fo', not 'trlm-fo@bare'"),
                           (dict(model="b"), "weights 2222"), (dict(reverse_model="rev"), "reverse_model=None")):
        if "reverse_model" in changed:
            stamps["rev"] = "3333"
        with pytest.raises(HindsightError, match=match):
            runner.run_experiment(Exp(**{"model": "a", **changed}), path)
        assert path.read_bytes() == before
    for same in (dict(limit=1), dict(threshold=0.9), dict(device="cpu"), dict(model="copy-of-a")):
        assert runner.run_experiment(Exp(**{"model": "a", **same}), path) == same.get("limit", 2)
        assert path.read_bytes() == before  # resumed: nothing recomputed, nothing appended
