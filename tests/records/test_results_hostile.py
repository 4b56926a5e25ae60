"""Results files that are not ours are refused with one sentence and left byte-identical."""

import pytest

from hindsight.errors import HindsightError
from hindsight.records.lock import release_results
from hindsight.records.results import ResultFile


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

    class Exp(runner.ModelExperiment):
        key_field = "id"

        def items(self):
            return [{"id": 1}, {"id": 2}]

        def setup(self, loaders):
            return {}

        def run_item(self, item):
            return {"id": item["id"], "score": 0.5}

        def summarise(self, records):
            return len(records)

    path = tmp_path / "r.jsonl"
    assert runner.run_experiment(Exp(model="a"), path) == 2
    before = path.read_bytes()
    assert b'"produced_by": {"model": "a", "model_weights": "1111"}' in before
    with pytest.raises(HindsightError, match="model='a', not 'b'"):
        runner.run_experiment(Exp(model="b"), path)
    assert path.read_bytes() == before
    assert runner.run_experiment(Exp(model="a"), path) == 2  # same model: resumes, nothing redone
    assert path.read_bytes() == before
