"""`hindsight data convert`: small public-format files written here become the layout the evaluations read."""

import csv
import gzip
import json

import pytest

from hindsight.errors import HindsightError
from hindsight.records.convert import convert


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_hh_rlhf_from_gzip(tmp_path):
    src = tmp_path / "test.jsonl.gz"
    rows = [{"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Knead it.\n\nHuman: More?\n\nAssistant: Bake.",
             "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: No."}]
    src.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    written = convert("hh-rlhf", [str(src)], tmp_path / "data")
    out = tmp_path / "data" / "hh_rlhf_harmless_base_test" / "test.jsonl"
    assert written == {str(out): 1}
    assert lines(out) == [{"id": "harmless-base-test-00000", "subset": "harmless-base",
                           "prompt": "How do I bake bread?", "num_human_turns": 2, **rows[0]}]


def test_truthfulqa_joins_csv_and_mc_targets(tmp_path):
    table = tmp_path / "TruthfulQA.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"])
        w.writerow(["Adversarial", "Myths", "Is the moon cheese? ", "No", "No; It is rock", "Yes", "nasa"])
        w.writerow(["Adversarial", "Myths", "Unmatched?", "x", "x", "y", ""])
    mc = tmp_path / "mc_task.json"
    mc.write_text(json.dumps([{"question": "Is the moon cheese?", "mc1_targets": {"No": 1, "Yes": 0},
                               "mc2_targets": {"No": 1, "It is rock": 1, "Yes": 0}}]))
    convert("truthfulqa", [str(table), str(mc)], tmp_path / "d")
    (row,) = lines(tmp_path / "d" / "truthfulqa" / "truthfulqa.jsonl")
    assert row["question"] == "Is the moon cheese?" and row["correct_answers"] == ["No", "It is rock"]
    assert row["mc1_targets"] == {"choices": ["No", "Yes"], "labels": [1, 0]}
    assert row["mc2_targets"]["labels"] == [1, 1, 0]


def test_scifact_writes_claims_corpus_and_qrels(tmp_path):
    claims = tmp_path / "claims_dev.jsonl"
    claims.write_text(json.dumps({"id": 7, "claim": "Water is wet.", "cited_doc_ids": [11],
                                  "evidence": {"11": [{"sentences": [0], "label": "SUPPORT"}]}}) + "\n")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"doc_id": 11, "title": "On water", "abstract": ["Water is wet.", "Yes."],
                                  "structured": False}) + "\n")
    convert("scifact", [str(claims), str(corpus)], tmp_path / "d")
    folder = tmp_path / "d" / "scifact_retrieval"
    assert lines(folder / "claims.jsonl")[0]["evidence"] == [{"doc_id": 11, "label": "SUPPORT", "sentences": [0]}]
    assert lines(folder / "qrels.jsonl") == [{"query_id": 7, "doc_id": 11, "score": 1}]
    assert lines(folder / "corpus.jsonl") == [{"doc_id": 11, "title": "On water", "abstract": ["Water is wet.", "Yes."]}]


def test_alpaca_eval_annotations(tmp_path):
    src = tmp_path / "annotations.json"
    src.write_text(json.dumps([{"instruction": "Hi", "output_1": "a", "output_2": "b", "preference": 2,
                                "generator_1": "g1", "generator_2": "g2", "dataset": "koala"}]))
    convert("alpaca-eval", [str(src)], tmp_path / "d")
    (row,) = lines(tmp_path / "d" / "alpaca_eval" / "pairwise_preferences_alpaca7b_vs_text_davinci_003.jsonl")
    assert row["id"] == 0 and row["preference"] == 2.0 and row["output_2"] == "b"


@pytest.mark.parametrize("content,match", [
    (b"\x00\x01\x02binary", "binary"),
    (b'{"chosen": "x"}\n', "'rejected'"),
    (b"[1, 2]\n", "not a JSON object"),
    (b"caf\xe9\n", "UTF-8"),
    (b"", "No records"),
])
def test_bad_inputs_are_one_sentence(tmp_path, content, match):
    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    with pytest.raises(HindsightError, match=match):
        convert("hh-rlhf", [str(src)], tmp_path / "d")
    assert not (tmp_path / "d" / "hh_rlhf_harmless_base_test" / "test.jsonl").exists()
