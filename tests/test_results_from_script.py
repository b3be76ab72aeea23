"""The summary script.py really writes goes through the graph loader unchanged (no hand-written stand-in)."""

import io
import json

import numpy as np
import pytest

import script
from assertdistill import intervals, results
from util import make_record, records_as_lines, save_tiny_model, tiny_run_flags, tiny_tokenizer, write_archive


@pytest.fixture(scope="module")
def script_run(tmp_path_factory):
    """One tiny script.py run, in-process; returns (its output dir, its summary as JSON)."""
    root = tmp_path_factory.mktemp("script_run")
    model_dir = save_tiny_model(str(root / "model"))
    vocab = len(tiny_tokenizer())
    flags = write_archive(str(root / "codet5.zip"), records_as_lines([make_record(i, vocab) for i in range(6)]),
                          records_as_lines([make_record(100 + i, vocab) for i in range(4)]))
    out_dir = root / "sweep" / "alpha_0.3_temp_1.5_seed_7"
    argv = tiny_run_flags(root, model_dir, flags, **{"--output_dir": str(out_dir), "--alpha": 0.3,
                                                     "--temperature": 1.5, "--seed": 7})
    assert script.main(argv) == 0
    return out_dir, json.loads((out_dir / results.SUMMARY_NAME).read_text())


def test_loader_reads_what_script_writes(script_run):
    out_dir, summary = script_run
    runs, skipped = results.load_runs(out_dir.parent)
    assert skipped == [] and len(runs) == 1
    run = runs[0]
    assert (run.path, run.alpha, run.temperature, run.seed) == (out_dir / results.SUMMARY_NAME, 0.3, 1.5, 7.0)
    written = {key: float(value) for key, value in summary["final_evaluation_metrics"].items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    assert written.items() <= run.metrics.items()
    assert run.metrics["training_duration_seconds"] == summary["training_duration_seconds"]
    assert run.metrics["num_eval_samples"] == 4
    assert {m.key for m in results.METRICS if m.required} <= set(run.metrics)


def test_epoch_log_script_writes_gives_curves(script_run):
    out_dir, summary = script_run
    records, problems = results.load_epoch_log(out_dir / results.EPOCH_LOG_NAME)
    assert problems == []
    epochs, accuracy = results.epoch_series(records, "eval", "avg_accuracy_s_vs_gt_script1")
    assert epochs == [1.0]
    assert accuracy == [summary["final_evaluation_metrics"]["avg_accuracy_s_vs_gt_script1"]]


def test_intervals_from_the_predictions_script_writes(script_run):
    out_dir, summary = script_run
    if not (out_dir / intervals.PREDICTIONS_NAME).exists():
        pytest.skip("this script.py writes no predictions.jsonl yet")
    runs, _ = results.load_runs(out_dir.parent)
    err = io.StringIO()
    predictions = intervals.load_all_predictions(runs, err)
    assert err.getvalue() == "" and list(predictions) == [out_dir / results.SUMMARY_NAME]
    scores = predictions[out_dir / results.SUMMARY_NAME]
    assert len(scores) == summary["final_evaluation_metrics"]["num_eval_samples"] == 4
    for key, values in scores.scores.items():  # the column means are the summary's averages
        assert float(np.nanmean(values)) == pytest.approx(summary["final_evaluation_metrics"][key], abs=1e-9), key
    assert {m.key for m in intervals.BOUNDED.values() if m.key in summary["final_evaluation_metrics"]} <= set(
        scores.scores)
    (cell,) = results.aggregate(runs)
    intervals.attach_intervals([cell], predictions)
    assert cell.intervals["avg_accuracy_s_vs_gt_script1"].method == "records"
