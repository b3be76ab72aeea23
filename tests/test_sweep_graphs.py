"""sweep_graphs.py over any axis, and runs that differ in a setting that is not swept (never pooled as seeds)."""

import csv
from pathlib import Path

import pytest
from sweep_fixtures import THESIS_FIGURES, run_cli, summary, write_run

import alpha_graphs
import sweep_graphs
from assertdistill.analysis import axes, comparisons, plotting, results

STUDENTS = ("demo/student", "dir2")
ACCURACY = "avg_accuracy_s_vs_gt_script1"


@pytest.fixture(scope="module")
def student_sweep(tmp_path_factory):
    """2 students x 2 alphas x 2 seeds at T=2; the second student scores 0.1 higher."""
    root = tmp_path_factory.mktemp("students")
    for number, student in enumerate(STUDENTS):
        for alpha in (0.0, 1.0):
            for seed in (1, 2):
                body = summary(alpha, 2.0, seed, student_model_name=student)
                body["final_evaluation_metrics"][ACCURACY] += 0.1 * number
                write_run(root, f"alpha_{alpha}_student_{number}_seed_{seed}", body)
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_runs_of_other_students_are_separate_cells_not_seeds(student_sweep):
    runs, _ = results.load_runs(student_sweep)
    cells = results.aggregate(runs)
    assert [(c.alpha, c.value("student_model_name"), c.n) for c in cells] == [
        (0.0, "demo/student", 2), (0.0, "dir2", 2), (1.0, "demo/student", 2), (1.0, "dir2", 2)]
    assert cells[0].axes == ("alpha", "temperature", "student_model_name")
    assert cells[1].name == "alpha=0, T=2, student_model_name=dir2"
    reference = comparisons.select_reference(cells, results.METRICS_BY_KEY[ACCURACY],
                                             "student_model_name=dir2,alpha=1", cells)
    assert reference is cells[3]
    with pytest.raises(comparisons.ReferenceSpecError, match="matches 2 cells"):
        comparisons.select_reference(cells, results.METRICS_BY_KEY[ACCURACY], "student_model_name=dir2", cells)


def test_alpha_graphs_keeps_the_students_apart_in_tables_and_lines(student_sweep, tmp_path):
    code, out, err = run_cli(alpha_graphs, ["--results_dir", student_sweep, "--output_dir", tmp_path])
    assert code == 0, err
    rows = read_csv(tmp_path / "summary.csv")
    assert list(rows[0])[:5] == ["alpha", "temperature", "student_model_name", "n", "ci_method"]
    assert [(r["alpha"], r["student_model_name"], r["n"]) for r in rows] == [
        ("0", "demo/student", "2"), ("0", "dir2", "2"), ("1", "demo/student", "2"), ("1", "dir2", "2")]
    assert "| alpha | T | student_model_name | n |" in (tmp_path / "summary.md").read_text()
    assert "4 cells (alpha, temperature, student_model_name)" in out
    assert "heatmap_avg_accuracy_s_vs_gt_script1.png" in out  # alpha x student: a grid
    runs, _ = results.load_runs(student_sweep)
    cells = results.aggregate(runs)
    labels = [label for label, _ in plotting.lines_of(cells, axes.ALPHA)]
    assert labels == ["T=2, student_model_name=demo/student", "T=2, student_model_name=dir2"]


def test_sweep_graphs_plots_a_text_axis(student_sweep, tmp_path):
    code, out, err = run_cli(sweep_graphs, ["--axis", "student_model_name", "--results_dir", student_sweep,
                                            "--output_dir", tmp_path])
    assert code == 0, err
    names = {p.name for p in tmp_path.iterdir()}
    assert {f"student_model_name_vs_{name}.png" for name in THESIS_FIGURES} <= names
    assert {"overview.png", f"{ACCURACY}.png", "summary.csv", "summary.md"} <= names
    runs, _ = results.load_runs(student_sweep)
    cells = results.aggregate(runs)
    swept = axes.axis("student_model_name")
    fig = plotting.metric_figure(cells, runs, results.METRICS_BY_KEY[ACCURACY], swept)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(STUDENTS)
    assert list(ax.get_xticks()) == [0.0, 1.0]  # evenly spaced
    assert [label for label, _ in plotting.lines_of(cells, swept)] == ["α=0, T=2", "α=1, T=2"]


def test_sweep_graphs_over_seeds_makes_every_run_a_cell(student_sweep, tmp_path):
    runs, _ = results.load_runs(student_sweep)
    cells = results.aggregate(runs, pool_seeds=False)
    assert len(cells) == 8 and {c.n for c in cells} == {1}
    assert cells[0].axes == ("alpha", "temperature", "seed", "student_model_name")
    assert [label for label, _ in plotting.lines_of(cells, axes.SEED)][:1] == [
        "α=0, T=2, student_model_name=demo/student"]
    code, _, err = run_cli(sweep_graphs, ["--axis", "seed", "--results_dir", student_sweep, "--output_dir", tmp_path,
                                          "--format", "svg"])
    assert code == 0, err
    rows = read_csv(tmp_path / "summary.csv")
    assert [(r["alpha"], r["seed"], r["student_model_name"], r["n"]) for r in rows][:4] == [
        ("0", "1", "demo/student", "1"), ("0", "1", "dir2", "1"), ("0", "2", "demo/student", "1"),
        ("0", "2", "dir2", "1")]
    assert (tmp_path / "seed_vs_loss.svg").exists()


def test_a_text_setting_added_later_is_an_axis_too(tmp_path):
    for divergence in ("reverse_kl", "forward_kl", "jsd"):
        write_run(tmp_path, divergence, summary(0.5, 2.0, 1, divergence=divergence))
    runs, _ = results.load_runs(tmp_path)
    cells = results.aggregate(runs)
    assert [c.value("divergence") for c in cells] == ["forward_kl", "jsd", "reverse_kl"]
    swept = axes.axis("divergence")
    assert axes.categorical(plotting.x_positions(cells, swept)) and plotting.grid_axis(cells, swept) is None


def test_runs_missing_a_setting_are_not_pooled_with_runs_that_have_it(tmp_path):
    write_run(tmp_path, "old", summary(0.5, 2.0, 1))  # a setting this version does not declare: no default
    write_run(tmp_path, "new", summary(0.5, 2.0, 2, future_setting="x"))
    cells = results.aggregate(results.load_runs(tmp_path)[0])
    assert [(c.value("future_setting"), c.n) for c in cells] == [("x", 1), (None, 1)]
    assert cells[1].name == "alpha=0.5, T=2, future_setting=none"


def test_a_run_from_before_the_divergence_flag_is_the_forward_kl_cell(tmp_path):
    write_run(tmp_path, "old", summary(0.5, 2.0, 1))
    write_run(tmp_path, "new", summary(0.5, 2.0, 2, divergence="forward_kl"))
    write_run(tmp_path, "jsd", summary(0.5, 2.0, 3, divergence="jsd"))
    cells = results.aggregate(results.load_runs(tmp_path)[0])
    assert sorted((c.value("divergence"), c.n) for c in cells) == [("forward_kl", 2), ("jsd", 1)]


def test_a_run_without_an_entry_counts_as_having_its_default(tmp_path):
    from assertdistill.distill.config import RunConfig

    default = RunConfig.__dataclass_fields__["allow_records_without_teacher"].default
    write_run(tmp_path, "old", summary(0.5, 2.0, 1))  # made before the flag existed
    write_run(tmp_path, "new", summary(0.5, 2.0, 2, allow_records_without_teacher=default))
    write_run(tmp_path, "other", summary(0.5, 2.0, 3, allow_records_without_teacher=not default))
    cells = results.aggregate(results.load_runs(tmp_path)[0])
    assert [(c.value("allow_records_without_teacher"), c.n) for c in cells] == [(default, 2), (not default, 1)]


def test_run_only_settings_never_split_cells(tmp_path):
    write_run(tmp_path, "a", summary(0.5, 2.0, 1, output_dir="a", log_steps=10))
    write_run(tmp_path, "b", summary(0.5, 2.0, 2, output_dir="b", log_steps=50))
    cells = results.aggregate(results.load_runs(tmp_path)[0])
    assert len(cells) == 1 and cells[0].n == 2


def test_unknown_axis_exits_2_in_one_line(student_sweep, tmp_path):
    code, _, err = run_cli(sweep_graphs, ["--axis", "nosuch", "--results_dir", student_sweep, "--output_dir", tmp_path])
    assert code == 2
    assert err == ("error: --axis nosuch: no run's args has nosuch; the cells differ in alpha, temperature, "
                   "student_model_name\n")


@pytest.mark.parametrize("axis,dirs", [("T", ("results_temp", "graphs_temp")), ("alpha", ("results_alpha", "graphs_alpha")),
                                       ("student_model_name", ("results_student_model_name",
                                                               "graphs_student_model_name"))])
def test_default_folders_follow_the_axis(axis, dirs):
    args = sweep_graphs.parse_args(["--axis", axis])
    assert (str(args.results_dir), str(args.output_dir)) == dirs


def test_every_declared_axis_names_a_run_setting():
    from assertdistill.distill.config import RunConfig

    fields = set(RunConfig.__dataclass_fields__)
    assert {axis.key for axis in axes.SWEPT} <= fields
    assert set(axes.RUN_ONLY_SETTINGS) <= fields


def test_long_legend_labels_go_below_the_axes_compacted_and_never_over_the_data():
    labels = [f"α=0.7, T=2, divergence={name}, hidden_state_weight={weight}, teacher_source=online"
              for name in ("forward_kl", "jsd") for weight in (0, 1)]
    assert plotting.compact_labels(labels) == [
        "divergence=forward_kl, hidden_state_weight=0", "divergence=forward_kl, hidden_state_weight=1",
        "divergence=jsd, hidden_state_weight=0", "divergence=jsd, hidden_state_weight=1"]  # shared parts left out
    assert plotting.compact_labels(["α=0, T=2", "α=1, T=2"]) == ["α=0, T=2", "α=1, T=2"]  # short: as they are
    fig = plotting.new_figure((6, 4))
    ax = fig.add_subplot()
    for index, label in enumerate(labels + [label + ", seed_note=x" for label in labels]):
        ax.plot([0, 1], [index, index + 1], label=label)
    plotting.place_legend(fig, ax, "bars: 95% CI")
    fig.canvas.draw()
    (legend,) = fig.legends
    renderer = fig.canvas.get_renderer()
    legend_box, axes_box = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend_box.y1 <= axes_box.y0  # below the axes, not over them
    assert legend_box.x0 >= 0 and legend_box.x1 <= fig.bbox.width  # inside the figure
    assert axes_box.height > 100  # the axes kept their height (the figure grew)
    assert all(len(line) <= plotting.LABEL_MAX for text in legend.get_texts() for line in text.get_text().split("\n"))
