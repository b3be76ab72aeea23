"""The summary script.py really writes goes through the graph loader unchanged (no hand-written stand-in)."""

import io
import json

import numpy as np
import pytest
from util import tiny_model_and_archive, tiny_run_flags

import script
from assertdistill.analysis import intervals, results
from assertdistill.core import schema
from assertdistill.scoring import registry, statistics


@pytest.fixture(scope="module")
def script_run(tmp_path_factory):
    """One tiny script.py run, in-process; returns (its output dir, its summary as JSON)."""
    root = tmp_path_factory.mktemp("script_run")
    model_dir, flags = tiny_model_and_archive(root, num_train=6, num_val=4, val_start=100, archive_name="codet5.zip")
    out_dir = root / "sweep" / "alpha_0.3_temp_1.5_seed_7"
    argv = tiny_run_flags(root, model_dir, flags, **{"--output_dir": str(out_dir), "--alpha": 0.3,
                                                     "--temperature": 1.5, "--seed": 7})
    assert script.main(argv) == 0
    return out_dir, json.loads((out_dir / schema.SUMMARY_FILENAME).read_text())


def test_loader_reads_what_script_writes(script_run):
    out_dir, summary = script_run
    runs, skipped = results.load_runs(out_dir.parent)
    assert skipped == [] and len(runs) == 1
    run = runs[0]
    assert (run.path, run.alpha, run.temperature, run.seed) == (out_dir / schema.SUMMARY_FILENAME, 0.3, 1.5, 7.0)
    written = {key: float(value) for key, value in summary[schema.FINAL_EVALUATION_METRICS].items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    assert written.items() <= run.metrics.items()
    assert run.metrics[schema.TRAINING_DURATION_SECONDS] == summary[schema.TRAINING_DURATION_SECONDS]
    assert run.metrics[schema.NUM_EVAL_SAMPLES] == 4
    assert {m.key for m in results.METRICS if m.required} <= set(run.metrics)


def test_epoch_log_script_writes_gives_curves(script_run):
    out_dir, summary = script_run
    records, problems = results.load_epoch_log(out_dir / schema.METRICS_FILENAME)
    assert problems == []
    epochs, accuracy = results.epoch_series(records, "eval", "avg_accuracy_s_vs_gt_script1")
    assert epochs == [1.0]
    assert accuracy == [summary[schema.FINAL_EVALUATION_METRICS]["avg_accuracy_s_vs_gt_script1"]]


def test_intervals_from_the_predictions_script_writes(script_run):
    out_dir, summary = script_run
    if not (out_dir / schema.PREDICTIONS_FILENAME).exists():
        pytest.skip("this script.py writes no predictions.jsonl yet")
    runs, _ = results.load_runs(out_dir.parent)
    err = io.StringIO()
    predictions = intervals.load_all_predictions(runs, err)
    assert err.getvalue() == "" and list(predictions) == [out_dir / schema.SUMMARY_FILENAME]
    scores = predictions[out_dir / schema.SUMMARY_FILENAME]
    assert len(scores) == summary[schema.FINAL_EVALUATION_METRICS]["num_eval_samples"] == 4
    for key, values in scores.scores.items():  # the column means are the summary's averages
        assert float(np.nanmean(values)) == pytest.approx(summary[schema.FINAL_EVALUATION_METRICS][key], abs=1e-9), key
    assert {m.key for m in intervals.BOUNDED.values() if m.key in summary[schema.FINAL_EVALUATION_METRICS]} <= set(
        scores.scores)
    (cell,) = results.aggregate(runs)
    intervals.attach_intervals([cell], predictions)
    assert scores.line_numbers is not None and len(set(scores.line_numbers)) == 4  # records can be paired
    assert statistics.MIN_BOOTSTRAP_RECORDS > 4  # too few records for the bootstrap: the conservative interval
    assert cell.intervals["avg_accuracy_s_vs_gt_script1"].method == "bounded"


def test_summary_holds_every_schema_key(script_run):
    """The real summary has the schema's keys in order, and every metric the graph loader knows of."""
    out_dir, summary = script_run
    assert list(summary) == list(schema.SUMMARY_KEYS)
    for key in results.TOP_LEVEL_KEYS:  # read beside final_evaluation_metrics, not inside it
        assert isinstance(summary[key], float), key
    known = {m.key for m in results.METRICS} - set(results.TOP_LEVEL_KEYS)
    assert known <= set(summary[schema.FINAL_EVALUATION_METRICS])
    assert {name: summary[schema.ARGS][key] for name, key in results.ARG_KEYS.items()} == {
        "alpha": 0.3, "temperature": 1.5, "seed": 7}


def test_logs_hold_every_schema_key(script_run):
    """metrics.jsonl entries and predictions.jsonl rows have the schema's keys, in order."""
    out_dir, summary = script_run
    (entry,) = summary[schema.TRAINING_HISTORY]
    assert list(entry) == [schema.HISTORY_EPOCH, schema.HISTORY_GLOBAL_STEP, schema.HISTORY_TRAIN, schema.HISTORY_EVAL,
                           schema.HISTORY_ELAPSED_SECONDS]
    assert list(entry[schema.HISTORY_TRAIN]) == [schema.TRAIN_LOSS, schema.TRAIN_HARD_LOSS, schema.TRAIN_SOFT_LOSS,
                                                 schema.TRAIN_LEARNING_RATE, schema.TRAIN_OPTIMIZER_STEPS,
                                                 schema.TRAIN_SKIPPED_NONFINITE_STEPS]
    rows = [json.loads(line) for line in (out_dir / schema.PREDICTIONS_FILENAME).read_text().splitlines()]
    # the thesis's keys, then the retrieval baseline's text (the run has training records), then every metric
    keys = [*schema.ROW_KEYS, schema.ROW_RETRIEVAL_PREDICTION, *(m.key for m in registry.RECORD_METRICS)]
    assert [list(row) for row in rows] == [keys] * 4
