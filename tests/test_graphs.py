"""alpha_graphs.py / temperature_graphs.py on generated sweeps and the thesis's published summaries."""

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from sweep_fixtures import (
    TEACHER_ACCURACY,
    THESIS_FIGURES,
    THESIS_METRICS,
    epoch_log,
    metric_values,
    run_cli,
    summary,
    write_flat,
    write_run,
)

import alpha_graphs
import temperature_graphs
from assertdistill.analysis import results
from assertdistill.core import schema
from assertdistill.scoring.statistics import bounded_mean_ci

ALPHAS, TEMPS, SEEDS = (0.0, 0.5, 1.0), (1.0, 4.0), (1, 2, 3)
FLAT_SEED = 3  # the grid sweep keeps this seed's runs as flat files, the thesis's layout
THESIS_RESULTS = Path(__file__).resolve().parents[1] / "thesis_results"


# (directory name, summary body, expected reason): each must be skipped, with the reason printed.
BAD_SUMMARIES = [
    ("bad_json", "{not json", "invalid JSON"),
    ("no_metrics", {k: v for k, v in summary(0.5, 1.0, 9).items() if k != schema.FINAL_EVALUATION_METRICS},
     "missing 'final_evaluation_metrics'"),
    ("no_args", {k: v for k, v in summary(0.5, 1.0, 9).items() if k != "args"}, "missing 'args'"),
    ("text_alpha", {**summary(0.5, 1.0, 9), schema.ARGS: {"alpha_kl_loss_weight": "high", "temperature": 1,
                                                     "seed": 9}}, "args.alpha_kl_loss_weight is not numeric"),
    ("no_seed", {**summary(0.5, 1.0, 9), schema.ARGS: {"alpha_kl_loss_weight": 0.5, "temperature": 1}},
     "missing args.seed"),
    ("no_f1", {**summary(0.5, 1.0, 9), schema.FINAL_EVALUATION_METRICS: {
        k: v for k, v in metric_values(0.5, 1.0, 9).items() if k != "avg_f1_s_vs_gt_script1"}},
     "incomplete, missing avg_f1_s_vs_gt_script1"),
    ("bool_metric", {**summary(0.5, 1.0, 9), schema.FINAL_EVALUATION_METRICS: {
        **metric_values(0.5, 1.0, 9), "avg_loss": True}}, "final_evaluation_metrics.avg_loss is a boolean"),
    ("no_duration", {k: v for k, v in summary(0.5, 1.0, 9).items() if k != schema.TRAINING_DURATION_SECONDS},
     "missing training_duration_seconds"),
    ("list", "[1, 2]", "top level is not a JSON object"),
]


@pytest.mark.parametrize("name,body,reason", BAD_SUMMARIES, ids=[c[0] for c in BAD_SUMMARIES])
def test_bad_summary_is_skipped_with_reason(tmp_path, name, body, reason):
    write_run(tmp_path, "good", summary(0.5, 1.0, 1))
    write_run(tmp_path, name, body)
    runs, skipped = results.load_runs(tmp_path)
    assert [r.path.parent.name for r in runs] == ["good"]
    assert [(p.parent.name, reason in why) for p, why in skipped] == [(name, True)], skipped


def test_numeric_string_args_and_duplicates(tmp_path):
    write_run(tmp_path, "a", {**summary(0.5, 2.0, 1), schema.ARGS: {"alpha_kl_loss_weight": "0.5", "temperature": "2",
                                                               "seed": "1", "epochs": 2}})
    write_run(tmp_path, "b", summary(0.5, 2.0, 1))  # same cell and seed as "a"
    runs, skipped = results.load_runs(tmp_path)
    assert [(r.alpha, r.temperature, r.seed) for r in runs] == [(0.5, 2.0, 1.0)]
    assert [p.parent.name for p, _ in skipped] == ["b"] and "duplicate" in skipped[0][1]


STUDENT_ACCURACY = metric_values(0.5, 2.0, 1)["avg_accuracy_s_vs_gt_script1"]
# (id, eval-metric changes, expected student share of the teacher's accuracy; None: not available)
SHARES = [
    ("written", {schema.STUDENT_SHARE_OF_TEACHER_ACCURACY: 0.25}, 0.25),
    ("derived", {schema.STUDENT_SHARE_OF_TEACHER_ACCURACY: "drop"}, STUDENT_ACCURACY / TEACHER_ACCURACY),
    ("teacher_scores_0", {schema.STUDENT_SHARE_OF_TEACHER_ACCURACY: None, "avg_accuracy_t_vs_gt_script1": 0.0}, None),
    ("thesis_only", {schema.STUDENT_SHARE_OF_TEACHER_ACCURACY: "drop", "avg_accuracy_t_vs_gt_script1": "drop"}, None),
]


@pytest.mark.parametrize("changes,expected", [c[1:] for c in SHARES], ids=[c[0] for c in SHARES])
def test_student_share_of_teacher_accuracy(changes, expected):
    metrics = {**metric_values(0.5, 2.0, 1), **changes}
    body = {**summary(0.5, 2.0, 1), schema.FINAL_EVALUATION_METRICS: {k: v for k, v in metrics.items() if v != "drop"}}
    run = results.parse_summary(Path("x.json"), body)
    share = run.metrics.get(schema.STUDENT_SHARE_OF_TEACHER_ACCURACY)
    assert share == (None if expected is None else pytest.approx(expected))


def test_epoch_log_keeps_the_last_attempt(tmp_path):
    lines = [{"epoch": 1, "train": {"loss": 9.0}}, {"epoch": 2, "train": {"loss": 8.0}},
             {"epoch": 1, "train": {"loss": 3.0}}, {"epoch": 2, "train": {"loss": "nan?"}},
             {"epoch": 3, "train": {"loss": 1.0}}]
    path = tmp_path / schema.METRICS_FILENAME
    path.write_text("\n".join(map(json.dumps, lines)) + "\n[]\n")
    records, problems = results.load_epoch_log(path)
    assert results.epoch_series(records, "train", "loss") == ([1.0, 3.0], [3.0, 1.0])
    assert problems == [f"{path}:6: not an object with an 'epoch' key"]


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """A 3 alpha x 2 T x 3 seed sweep in both layouts, with extras, epoch logs on seed 1, two broken
    summaries, a JSON file that is not a summary, and other JSON files that must not be read."""
    root = tmp_path_factory.mktemp("sweep")
    for alpha in ALPHAS:
        for temperature in TEMPS:
            for seed in SEEDS:
                if seed == FLAT_SEED:
                    write_flat(root, f"alpha{alpha} T{temperature}.json", summary(alpha, temperature, seed))
                else:
                    write_run(root, f"alpha_{alpha}_temp_{temperature}_seed_{seed}",
                              summary(alpha, temperature, seed), epoch_log(alpha) if seed == 1 else None)
    for name, body, _ in BAD_SUMMARIES[:2]:
        write_run(root / "broken", name, body)
    write_flat(root, "notes.json", {"comment": "not a summary"})
    write_flat(root / "alpha_0.0_temp_1.0_seed_1" / schema.FINAL_MODEL_DIRNAME, "config.json", {"d_model": 8})
    write_flat(root / "nested", "alpha0.3.json", summary(0.3, 1.0, 1))  # flat files count only at the top
    return root


# (script, the hyperparameter on its x axis)
SCRIPTS = [(alpha_graphs, "alpha"), (temperature_graphs, "temperature")]


@pytest.fixture(scope="module", params=SCRIPTS, ids=["alpha_graphs", "temperature_graphs"])
def graphs(request, grid_sweep, tmp_path_factory):
    """Run one graph script on grid_sweep; (output dir, exit code, stdout, stderr, swept name)."""
    module, swept = request.param
    out_dir = tmp_path_factory.mktemp("graphs")
    code, out, err = run_cli(module, ["--results_dir", grid_sweep, "--output_dir", out_dir])
    return out_dir, code, out, err, swept


def test_graph_scripts_write_every_file(graphs):
    out_dir, code, out, _, swept = graphs
    assert code == 0
    expected = {f"{m.key}.png" for m in results.METRICS} | {f"{swept}_vs_{name}.png" for name in THESIS_FIGURES} | {
        "overview.png", "heatmap_avg_accuracy_s_vs_gt_script1.png", "training_curves.png", "summary.csv",
        "summary.md"}
    assert {p.name for p in out_dir.iterdir()} == expected
    assert all((out_dir / name).stat().st_size > 1000 for name in expected)
    assert str(out_dir / "overview.png") in out


def test_broken_summaries_and_epoch_lines_are_reported(graphs, grid_sweep):
    _, _, out, err, _ = graphs
    for name, _, reason in BAD_SUMMARIES[:2]:
        assert f"skip {grid_sweep / 'broken' / name / schema.SUMMARY_FILENAME}: " in err
        assert reason in err
    skipped_files = [line.split(": ")[0] for line in err.splitlines()
                     if line.startswith("skip ") and f"{schema.METRICS_FILENAME}:" not in line]
    assert sorted(skipped_files) == sorted(
        [f"skip {grid_sweep / 'broken' / name / schema.SUMMARY_FILENAME}" for name in ("bad_json", "no_metrics")]
        + [f"skip {grid_sweep / 'notes.json'}"]), err
    assert f"skip {grid_sweep / 'notes.json'}: not a distillation summary" in err
    assert "config.json" not in err and "alpha0.3" not in err
    assert err.count(":3: invalid JSON") == len(ALPHAS) * len(TEMPS)  # the broken last line of each epoch log
    assert f"loaded {len(ALPHAS) * len(TEMPS) * len(SEEDS)} runs" in out
    assert "(3 skipped; 0 with predictions.jsonl)" in out


def test_summary_csv_has_mean_and_std_over_seeds(graphs):
    out_dir = graphs[0]
    with open(out_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["alpha"]), float(r["temperature"]), int(r["n"])) for r in rows] == [
        (a, t, len(SEEDS)) for a in ALPHAS for t in TEMPS]
    for row in rows:
        alpha, temperature = float(row["alpha"]), float(row["temperature"])
        per_seed = [{**summary(alpha, temperature, s)[schema.FINAL_EVALUATION_METRICS],
                     schema.TRAINING_DURATION_SECONDS: summary(alpha, temperature, s)[schema.TRAINING_DURATION_SECONDS]}
                    for s in SEEDS]
        for key in THESIS_METRICS + [schema.TRAINING_DURATION_SECONDS, schema.STUDENT_SHARE_OF_TEACHER_ACCURACY,
                                     "avg_strict_exact_match_s_vs_gt", "avg_strict_exact_match_s_vs_t"]:
            values = [v[key] for v in per_seed]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.mean(values), rel=1e-9), key
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-9), key


def test_summary_md_is_a_table_with_teacher_reference(graphs):
    text = (graphs[0] / "summary.md").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("| alpha | T | n | Accuracy vs ground truth |")
    assert len([ln for ln in lines if ln.startswith("| ")]) == 1 + len(ALPHAS) * len(TEMPS)
    assert " ± " in lines[2]
    assert "- Teacher, Accuracy vs ground truth: 0.8000 ± 0.0000 (n=18 runs)\n" in text


# (script, shipped folder of the thesis's flat summaries, swept hyperparameter, its values, figure format)
THESIS_SWEEPS = [
    (alpha_graphs, "results_alpha", "alpha", [0.1, 0.2, 0.5, 0.6, 0.7, 0.9], "png"),
    (temperature_graphs, "results_temp", "temperature", [0.1, 0.5, 1, 1.5, 2, 3, 4], "svg"),
]


@pytest.mark.parametrize("module,folder,swept,values,fmt", THESIS_SWEEPS, ids=["alpha", "temperature"])
def test_thesis_published_summaries(tmp_path, module, folder, swept, values, fmt):
    results_dir = THESIS_RESULTS / folder
    out_dir = tmp_path / "graphs"
    code, out, err = run_cli(module, ["--results_dir", results_dir, "--output_dir", out_dir, "--format", fmt])
    assert (code, err) == (0, "")
    names = {p.name for p in out_dir.iterdir()}
    assert names == {f"{m.key}.{fmt}" for m in results.METRICS if m.required} | {
        f"{swept}_vs_{name}.{fmt}" for name in THESIS_FIGURES} | {"overview." + fmt, "summary.csv", "summary.md"}
    assert "heatmap: skipped" in out and "training curves: skipped" in out
    assert "No paired comparison: no run has a predictions.jsonl" in out  # the thesis kept means only
    text = (out_dir / "summary.md").read_text()
    assert "Teacher" not in text and "no interval is given for them" in text
    with open(out_dir / "summary.csv", newline="") as f:
        rows = {float(row[swept]): row for row in csv.DictReader(f)}
    assert sorted(rows) == values
    for path in sorted(results_dir.glob("*.json")):  # every number of every thesis file is in the CSV
        thesis = json.loads(path.read_text())
        row = rows[float(thesis[schema.ARGS][results.ARG_KEYS[swept]])]
        assert (float(row["alpha"]), float(row["temperature"]), row["n"]) == (
            thesis[schema.ARGS]["alpha_kl_loss_weight"], thesis[schema.ARGS]["temperature"], "1")
        expected = {**thesis[schema.FINAL_EVALUATION_METRICS],
                    schema.TRAINING_DURATION_SECONDS: thesis[schema.TRAINING_DURATION_SECONDS]}
        for key, value in expected.items():
            assert float(row[f"{key}_mean"]) == pytest.approx(value, rel=1e-9), (path.name, key)
            metric = results.METRICS_BY_KEY.get(key)
            interval = [float(row[f"{key}_ci_{side}"]) for side in ("low", "high")]
            if metric is not None and metric.bounded:  # conservative, from the 1000 records alone
                assert interval == pytest.approx(bounded_mean_ci(value, 1000), rel=1e-9), key
            else:  # loss, time: no interval is invented
                assert all(map(math.isnan, interval)), key
        assert row["ci_method"] == results.INTERVAL_METHODS["bounded"]
    committed = THESIS_RESULTS / f"graphs_{folder.split('_')[1]}" / "summary.csv"
    assert (out_dir / "summary.csv").read_text() == committed.read_text(), "regenerate thesis_results (README)"


def test_thesis_files_mixed_with_sweep_runs_and_generated_flat_files(tmp_path):
    shutil.copytree(THESIS_RESULTS / "results_alpha", tmp_path, dirs_exist_ok=True)
    write_flat(tmp_path, "my run.json", summary(0.3, 1.0, 42, extras=False))
    write_run(tmp_path, "alpha_0.4_seed_42", summary(0.4, 1.0, 42))
    write_flat(tmp_path, "sweep_config.json", {"alphas": [0.1, 0.2]})
    runs, skipped = results.load_runs(tmp_path)
    assert [(r.path.name, r.alpha, r.temperature, r.seed) for r in runs] == [
        ("alpha0.1.json", 0.1, 1.0, 42), ("alpha0.2.json", 0.2, 1.0, 42), ("alpha0.5.json", 0.5, 1.0, 42),
        ("alpha0.6.json", 0.6, 1.0, 42), ("alpha0.7.json", 0.7, 1.0, 42), ("alpha0.9.json", 0.9, 1.0, 42),
        (schema.SUMMARY_FILENAME, 0.4, 1.0, 42), ("my run.json", 0.3, 1.0, 42)]
    assert [(p.name, reason.split(" (")[0]) for p, reason in skipped] == [
        ("sweep_config.json", "not a distillation summary")]
    thesis = json.loads((tmp_path / "alpha0.6.json").read_text())[schema.FINAL_EVALUATION_METRICS]
    assert runs[3].metrics == {k: float(v) for k, v in thesis.items()} | {
        schema.TRAINING_DURATION_SECONDS: 11867.13}


# (description, how to build results_dir under tmp_path, expected message on stderr)
NO_RESULTS = [
    ("missing dir", lambda root: root / "nope", "does not exist"),
    ("empty dir", lambda root: root, "no *.json or */distillation_summary.json found"),
    ("all malformed", lambda root: write_run(root, "x", "{oops").parent, "(1 skipped)"),
]


@pytest.mark.parametrize("module", [alpha_graphs, temperature_graphs], ids=["alpha", "temperature"])
@pytest.mark.parametrize("case,make_dir,message", NO_RESULTS, ids=[c[0] for c in NO_RESULTS])
def test_no_usable_summaries_exit_2(tmp_path, module, case, make_dir, message):
    out_dir, results_dir = tmp_path / "graphs", make_dir(tmp_path)
    code, _, err = run_cli(module, ["--results_dir", results_dir, "--output_dir", out_dir])
    assert code == 2
    assert err.splitlines()[-1].startswith(f"error: no usable summary in {results_dir}") or "does not exist" in err
    assert message in err and "Traceback" not in err
    assert not out_dir.exists()


def test_unknown_heatmap_metric_exit_2(tmp_path):
    write_run(tmp_path, "r", summary(0.5, 2.0, 1))
    code, _, err = run_cli(temperature_graphs, ["--results_dir", tmp_path, "--output_dir", tmp_path / "g",
                                                "--heatmap_metric", "avg_typo"])
    assert code == 2 and err.splitlines() == [f"error: --main_metric avg_typo is in no summary; available: "
                                              f"{', '.join(results.metric_keys(results.load_runs(tmp_path)[0]))}"]
