"""predictions.jsonl (one row per evaluated record, in file order) and the summary's confidence intervals."""

import numpy as np
import pytest
from util import (
    check_predictions_match_summary,
    make_record,
    records_as_lines,
    save_tiny_model,
    tiny_run_flags,
    tiny_tokenizer,
    write_archive,
)

import script
from assertdistill.scoring.registry import RECORD_METRICS
from assertdistill.distill.summary import confidence_intervals
from assertdistill.scoring.statistics import wilson_ci


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(str(tmp_path_factory.mktemp("predictions") / "model"))


def test_predictions_are_in_file_order_and_average_to_the_summary(model_dir, tmp_path):
    vocab = len(tiny_tokenizer())
    val_records = [make_record(200 + i, vocab) for i in range(9)]
    val_records[4].pop("predicted_assertions")  # skipped (thesis rule): not a row
    val_records[0].update(repo="calc", test_path="src/test/java/CalcTest.java", test_method="adds")  # copied
    val_records[1].update(repo=7, test_method="subtracts")  # a non-string location field is not copied
    val = records_as_lines(val_records)
    val.insert(2, "{broken")
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([make_record(i, vocab) for i in range(6)]), val)
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--eval_batch_size": 2, "--num_dataloader_workers": 2,
                                                         "--num_beams": 1})
    assert script.main(argv) == 0
    expected = [record["original_target"] for index, record in enumerate(val_records) if index != 4]
    rows = check_predictions_match_summary(tmp_path / "out", expected)
    assert rows[0]["teacher_prediction"] == "assertEquals(200, calculator.add(200, 0));"
    assert rows[0]["teacher_prediction_script1"] == "['assertEquals(200, calculator.add(200, 0));']"
    assert list(rows[0])[:5] == ["index", "line_number", "repo", "test_path", "test_method"]
    assert [rows[0][key] for key in ("repo", "test_path", "test_method")] == ["calc", "src/test/java/CalcTest.java",
                                                                              "adds"]
    assert set(rows[1]) == {"index", "line_number", "test_method", "ground_truth", "teacher_prediction",
                            "teacher_prediction_script1", "student_prediction", "retrieval_prediction",
                            *(m.key for m in RECORD_METRICS)}
    assert rows[1]["test_method"] == "subtracts" and "repo" not in rows[2]
    assert [row["parses_as_java_teacher"] for row in rows] == [1.0] * len(rows)  # make_record's teacher line parses


def test_confidence_intervals_are_bootstrap_percentiles_of_the_mean_at_least_wilson():
    rows = [{"accuracy": float(index % 4 == 0), "similarity": 0.5} for index in range(400)]
    intervals = confidence_intervals(rows, ["accuracy", "similarity"])
    assert intervals["avg_similarity"] == pytest.approx(list(wilson_ci(0.5, 400)))  # no spread: never zero width
    low, high = intervals["avg_accuracy"]
    half_width = 1.96 * np.sqrt(0.25 * 0.75 / 400)  # normal approximation of the mean's 95% interval
    assert low == pytest.approx(0.25 - half_width, abs=0.01) and high == pytest.approx(0.25 + half_width, abs=0.01)
    assert confidence_intervals(rows, ["accuracy"]) == {key: value for key, value in intervals.items()
                                                        if key != "avg_similarity"}  # fixed seed
    assert confidence_intervals([], ["accuracy"]) is None
