import json

import pytest

from hindsight.errors import HindsightError
from hindsight.infra import atomic_write
from hindsight.records.results import ResultFile
from hindsight.records.stats import format_rate, mean_interval, wilson_interval


def test_result_file_appends_and_resumes(tmp_path):
    path = tmp_path / "r.jsonl"
    rf = ResultFile(path)
    rf.append({"id": "a", "v": 1})
    rf.append({"id": 2, "v": 2})
    again = ResultFile(path)
    assert "a" in again and 2 in again and "b" not in again and len(again) == 2


def test_result_file_drops_a_half_written_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n" + '{"id": "b", "v"')
    rf = ResultFile(path)
    assert rf.keys() == ["a"] and rf.get("a") == {"id": "a"} and [r["id"] for r in rf] == ["a"]
    rf.append({"id": "b", "v": 3})
    lines = path.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b"]


def test_result_file_rejects_corruption_in_the_middle(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 2}\n')
    with pytest.raises(HindsightError, match="line 2"):
        ResultFile(path)


def test_atomic_write(tmp_path):
    p = tmp_path / "sub" / "x.json"
    atomic_write(p, "one")
    atomic_write(p, "two")
    assert p.read_text() == "two" and [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 0) == (0.0, 1.0)
    m, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo < 2 < hi
    assert format_rate(8, 10).startswith("0.800 [0.490, 0.943]")
