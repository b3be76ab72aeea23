"""Results folders as real sweeps leave them: bad values, FIFOs, symlinks, reused output folders, many cells."""

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from sweep_fixtures import metric_values, run_cli, summary, write_run

import alpha_graphs
from assertdistill.analysis import axes, comparisons, graphs, intervals, plotting, results
from assertdistill.core import schema

ACCURACY = "avg_accuracy_s_vs_gt_script1"


def with_metrics(alpha, seed, **changes) -> dict:
    """A summary of (alpha, T=2, seed) with some final metrics replaced."""
    body = summary(alpha, 2.0, seed)
    body[schema.FINAL_EVALUATION_METRICS] = {**metric_values(alpha, 2.0, seed), **changes}
    return body


# (id, metric key, value written as JSON text, the reason printed)
BAD_VALUES = [
    ("nan_score", ACCURACY, "NaN", "is nan"),
    ("infinite_score", ACCURACY, "Infinity", "is inf"),
    ("score_above_1", ACCURACY, "1.5", "is 1.5, outside [0, 1]"),
    ("negative_score", ACCURACY, "-0.1", "is -0.1, outside [0, 1]"),
    ("nan_loss", "avg_loss", "NaN", "is nan"),
    ("negative_teacher_count", "num_eval_samples_with_teacher_prediction", "-1", "is -1.0, not a record count"),
]
# (id, value of num_eval_samples, the reason printed): the whole summary is skipped, its means are over nothing
BAD_COUNTS = [
    ("nan_count", "NaN", "is nan"),
    ("infinite_count", "Infinity", "is inf"),
    ("zero_count", "0", "is 0.0, not a positive record count"),
    ("negative_count", "-5", "is -5.0, not a positive record count"),
]


def write_bad_sweep(root, key, text):
    """Runs of alpha 0 (good) and alpha 1, which would be the best by far but for `key` written as `text`."""
    write_run(root, "good", with_metrics(0.0, 1))
    changes = {"avg_loss": 0.01, ACCURACY: 0.99}
    changes[key] = 12345.0
    return write_run(root, "bad", json.dumps(with_metrics(1.0, 1, **changes)).replace("12345.0", text))


@pytest.mark.parametrize("key,text,reason", [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_is_left_out_by_name_and_never_chosen(tmp_path, key, text, reason):
    bad = write_bad_sweep(tmp_path, key, text)
    runs, skipped = results.load_runs(tmp_path)
    assert skipped == [] and len(runs) == 2
    bad_run = next(run for run in runs if run.path.parent == bad)
    assert bad_run.problems == (f"final_evaluation_metrics.{key} {reason}: left out",)
    cells = results.aggregate(runs)
    bad_cell = next(c for c in cells if c.alpha == 1.0)
    assert key not in bad_cell.stats
    if key in (ACCURACY, "avg_loss"):  # the cell would win on the value it lacks
        reference = comparisons.select_reference(cells, results.METRICS_BY_KEY[key], None, cells)
        assert reference.alpha == 0.0
    intervals.attach_intervals(cells, {})
    for cell in cells:
        assert all(math.isfinite(stat[0]) for stat in cell.stats.values())
        assert all(0 <= interval.low <= interval.high <= 1 for interval in cell.intervals.values())


@pytest.mark.parametrize("text,reason", [c[1:] for c in BAD_COUNTS], ids=[c[0] for c in BAD_COUNTS])
def test_a_summary_with_a_bad_record_count_is_skipped_by_name(tmp_path, text, reason):
    bad = write_bad_sweep(tmp_path, "num_eval_samples", text)
    runs, skipped = results.load_runs(tmp_path)
    assert [run.alpha for run in runs] == [0.0]
    assert skipped == [(bad / schema.SUMMARY_FILENAME, f"final_evaluation_metrics.num_eval_samples {reason}: "
                                                       "its means are over no known number of records")]


def test_the_graph_script_names_file_and_key_of_a_value_left_out(tmp_path):
    bad = write_bad_sweep(tmp_path / "runs", "avg_loss", "NaN")
    code, out, err = run_cli(alpha_graphs, ["--results_dir", tmp_path / "runs", "--output_dir", tmp_path / "g",
                                            "--main_metric", "avg_loss"])
    assert code == 0, err
    assert err.splitlines() == [f"skip {bad / schema.SUMMARY_FILENAME}: final_evaluation_metrics.avg_loss is nan: "
                                "left out"]
    rows = (tmp_path / "g" / "summary.csv").read_text().splitlines()
    assert rows[2].startswith("1,2,1,") and ",nan,nan,nan,nan" in rows[2]  # alpha 1: no loss, not a NaN mean


def test_the_best_cell_is_never_one_whose_main_metric_was_left_out(tmp_path):
    write_run(tmp_path, "a", with_metrics(0.0, 1))
    write_run(tmp_path, "b", json.dumps(with_metrics(1.0, 1, avg_loss=-1.0)).replace("-1.0", "NaN"))
    runs, _ = results.load_runs(tmp_path)
    cells = results.aggregate(runs)
    reference = comparisons.select_reference(cells, results.METRICS_BY_KEY["avg_loss"], None, cells)
    assert reference.alpha == 0.0 and not math.isnan(reference.stats["avg_loss"][0])


def test_fifos_are_skipped_not_read(tmp_path):
    write_run(tmp_path, "good", summary(0.5, 2.0, 1))
    (tmp_path / "fifo_run").mkdir()
    os.mkfifo(tmp_path / "fifo_run" / schema.SUMMARY_FILENAME)
    os.mkfifo(tmp_path / "flat.json")
    os.mkfifo(tmp_path / "good" / schema.PREDICTIONS_FILENAME)
    runs, skipped = results.load_runs(tmp_path)
    not_regular = "not a regular file (a FIFO, device or folder)"
    assert [run.path.parent.name for run in runs] == ["good"]
    assert sorted(skipped) == [(tmp_path / "fifo_run" / schema.SUMMARY_FILENAME, not_regular),
                               (tmp_path / "flat.json", not_regular)]
    os.mkfifo(tmp_path / "good" / schema.METRICS_FILENAME)
    curves_err = io.StringIO()
    assert plotting.load_curves(runs, curves_err) == {}
    assert curves_err.getvalue() == f"skip {tmp_path / 'good' / schema.METRICS_FILENAME}: {not_regular}\n"
    err = io.StringIO()
    assert intervals.load_all_predictions(runs, err) == {}
    assert err.getvalue() == (f"skip {tmp_path / 'good' / schema.PREDICTIONS_FILENAME}: {not_regular}; its cell gets "
                              "the conservative interval\n")


def test_symlinked_run_folders_are_followed_once_and_loops_reported(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_run(elsewhere, "run_b", summary(0.5, 2.0, 2))
    root = tmp_path / "results"
    write_run(root, "run_a", summary(0.5, 2.0, 1))
    (root / "linked").symlink_to(elsewhere / "run_b")
    (root / "run_a" / "loop").symlink_to(root)
    runs, skipped = results.load_runs(root)
    assert sorted(str(r.path.relative_to(root)) for r in runs) == [f"linked/{schema.SUMMARY_FILENAME}",
                                                                   f"run_a/{schema.SUMMARY_FILENAME}"]
    assert skipped == [(root / "run_a" / "loop", f"symlink loop: leads back to {os.path.realpath(root)}")]


def test_an_output_folder_reused_for_other_results_keeps_only_this_runs_outputs(tmp_path):
    line = tmp_path / "line"
    for alpha in (0.0, 1.0):
        write_run(line, f"a{alpha}", summary(alpha, 2.0, 1))
    out_dir = tmp_path / "graphs"
    out_dir.mkdir()
    earlier = [schema.heatmap_filename(ACCURACY, "png"), schema.COMPARISONS_FILENAME, "alpha_vs_loss.svg",
               "temperature_vs_loss.png", "avg_loss.pdf"]  # what runs on a grid, in other formats, left
    for name in earlier + ["notes.txt", "photo.png"]:
        (out_dir / name).write_text("an earlier run's or the user's")
    code, out, _ = run_cli(alpha_graphs, ["--results_dir", line, "--output_dir", out_dir])
    assert code == 0
    names = {p.name for p in out_dir.iterdir()}
    assert names.isdisjoint(earlier) and {"notes.txt", "photo.png", "alpha_vs_loss.png", "avg_loss.png"} <= names
    assert f"removed {out_dir / schema.COMPARISONS_FILENAME} (an earlier run's output that this run did not write)" in out


@pytest.mark.parametrize("name", ["summary.csv", "avg_loss.pdf", "overview.svg", "heatmap_avg_loss.png",
                                  "student_model_name_vs_similarity.png", "training_curves.png"])
def test_graph_outputs_are_recognised(name, tmp_path):
    assert graphs.is_graph_output(tmp_path / name)


@pytest.mark.parametrize("name", ["notes.txt", "avg_loss.txt", "photo.png", "summary.csv.bak"])
def test_other_files_are_not_graph_outputs(name, tmp_path):
    assert not graphs.is_graph_output(tmp_path / name)


def many_cells(alphas: int, temperatures: int) -> list:
    """Cells of an alphas x temperatures grid with one run each."""
    runs = [results.parse_summary(Path(f"r{i}_{j}.json"), summary(i / alphas, 2.0 ** j, 1))
            for i in range(alphas) for j in range(temperatures)]
    return results.aggregate(runs), runs


def test_a_figure_with_many_cells_keeps_its_legend_outside_and_few_ticks():
    cells, runs = many_cells(40, 9)
    metric = results.METRICS_BY_KEY[ACCURACY]
    fig = plotting.metric_figure(cells, runs, metric, axes.ALPHA)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_legend() is None and len(fig.legends) == 1  # 9 lines: the legend is the figure's
    legend_box, axes_box = fig.legends[0].get_window_extent(), ax.get_window_extent()
    assert legend_box.x0 >= axes_box.x1 - 1  # right of the axes, not over the data
    labels = [tick.get_text() for tick in ax.get_xticklabels() if tick.get_text()]
    assert 2 <= len(labels) <= plotting.MAX_TICKS


def test_a_categorical_axis_with_many_values_gets_at_most_max_ticks():
    runs = [results.parse_summary(Path(f"s{i}.json"), summary(0.5, 2.0, 1, student_model_name=f"student{i}"))
            for i in range(60)]
    cells = results.aggregate(runs)
    swept = axes.axis("student_model_name")
    fig = plotting.metric_figure(cells, runs, results.METRICS_BY_KEY[ACCURACY], swept)
    labels = [tick.get_text() for tick in fig.axes[0].get_xticklabels()]
    assert 2 <= len(labels) <= plotting.MAX_TICKS and labels[0] == "student0"
    assert np.all(np.diff(fig.axes[0].get_xticks()) > 0)


def test_the_soft_loss_of_alpha_0_is_not_plotted_as_a_measured_zero(tmp_path):
    """At alpha 0 the loss never computes the divergence and writes 0.0 (as the thesis's does): not a value."""
    write_run(tmp_path, "a0", with_metrics(0.0, 42, avg_soft_loss=0.0))
    write_run(tmp_path, "a5", with_metrics(0.5, 42, avg_soft_loss=0.25))
    runs, skipped = results.load_runs(tmp_path)
    assert not skipped
    soft = {run.alpha: run.metrics.get(schema.AVG_SOFT_LOSS) for run in runs}
    assert soft == {0.0: None, 0.5: 0.25}
    cells = {cell.alpha: cell for cell in results.aggregate(runs)}
    assert schema.AVG_SOFT_LOSS not in cells[0.0].stats and cells[0.5].stats[schema.AVG_SOFT_LOSS][0] == 0.25


def test_a_soft_loss_measured_at_alpha_0_is_kept(tmp_path):
    write_run(tmp_path, "a0", with_metrics(0.0, 42, avg_soft_loss=0.7))
    runs, _ = results.load_runs(tmp_path)
    assert runs[0].metrics[schema.AVG_SOFT_LOSS] == 0.7
