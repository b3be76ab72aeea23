"""Intervals of cell means and paired comparisons, on sweeps generated with per-record scores."""

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

import alpha_graphs
from assertdistill.analysis import comparisons, intervals, results
from assertdistill.core import schema
from assertdistill.scoring import statistics

N_RECORDS = 400
WITHOUT_TEACHER = (5, 17)  # records with no teacher prediction: their vs-teacher scores are null
BOUNDED = list(intervals.BOUNDED.values())
MAIN = results.METRICS_BY_KEY["avg_accuracy_s_vs_gt_script1"]


def per_record_scores(quality: float, seed: int, n: int = N_RECORDS) -> dict[str, np.ndarray]:
    """Per-record scores of every bounded metric (key: summary key), fractional ones around `quality`."""
    rng = np.random.default_rng(seed)
    scores = {}
    for metric in BOUNDED:
        values = (rng.random(n) < quality).astype(float) if metric.binary else rng.beta(8 * quality,
                                                                                      8 * (1 - quality), n)
        if metric.vs_teacher:
            values[list(WITHOUT_TEACHER)] = np.nan
        scores[metric.key] = values
    return scores


def truths(n: int = N_RECORDS, changed: int | None = None) -> list[str]:
    """The validation records' ground truths; `changed` makes one of them different."""
    return [f"assertEquals({i}, f({i}));" + (" // other" if i == changed else "") for i in range(n)]


def write_run(root: Path, alpha: float, seed: int, scores: dict, ground_truths: list[str],
              predictions: bool = True, temperature: float = 2.0, first_line: int = 1, **args) -> Path:
    """A run directory with a summary whose means are those of `scores` (more `args` as given), and its
    predictions.jsonl, whose records sit at line_number first_line, first_line + 1, ..."""
    run_dir = root / "_".join([f"alpha_{alpha}_temp_{temperature}"] + [f"{k}_{v}" for k, v in args.items()]
                              + [f"seed_{seed}"])
    run_dir.mkdir(parents=True)
    n = len(ground_truths)
    means = {key: float(np.nanmean(values)) for key, values in scores.items()}
    summary = {schema.ARGS: {"alpha_kl_loss_weight": alpha, "temperature": temperature, "seed": seed, **args},
               schema.TRAINING_DURATION_SECONDS: 100.0 + seed,
               schema.FINAL_EVALUATION_METRICS: {
                   **means, "avg_loss": 1.0 + alpha, "avg_hard_loss": 1.0, "avg_soft_loss": alpha,
                   "avg_inference_time_per_sample_ms": 20.0 + seed, "num_eval_samples": n,
                   "num_eval_samples_with_teacher_prediction": n - len(WITHOUT_TEACHER)}}
    (run_dir / schema.SUMMARY_FILENAME).write_text(json.dumps(summary))
    if predictions:
        lines = []
        for i, truth in enumerate(ground_truths):
            record = {"index": i, "line_number": first_line + i, "ground_truth": truth, "teacher_prediction": truth,
                      "student_prediction": "x"}
            for key, values in scores.items():
                record[key.removeprefix("avg_")] = None if np.isnan(values[i]) else float(values[i])
            lines.append(json.dumps(record))
        (run_dir / schema.PREDICTIONS_FILENAME).write_text("\n".join(lines) + "\n")
    return run_dir


def load(root: Path):
    """(cells with intervals, per-record scores by summary path, stderr) of a results directory."""
    runs, _ = results.load_runs(root)
    cells = results.aggregate(runs)
    err = io.StringIO()
    predictions = intervals.load_all_predictions(runs, err)
    intervals.attach_intervals(cells, predictions)
    return cells, predictions, err.getvalue()


def test_bootstrap_intervals_come_from_the_records(tmp_path):
    one = per_record_scores(0.4, seed=1)
    two = [per_record_scores(0.6, seed=s) for s in (2, 3)]
    write_run(tmp_path, 0.0, 1, one, truths())
    for seed, scores in zip((2, 3), two):
        write_run(tmp_path, 0.5, seed, scores, truths())
    cells, predictions, err = load(tmp_path)
    assert err == "" and len(predictions) == 3
    key = MAIN.key
    assert [interval.method for interval in (cells[0].intervals[key], cells[1].intervals[key])] == [
        "records", "seeds+records"]
    assert cells[0].intervals[key][:2] == pytest.approx(statistics.score_mean_ci(one[key]), rel=1e-12)
    cell_mean = np.mean([s[key].mean() for s in two])
    assert cells[1].intervals[key][:2] == pytest.approx(statistics.at_least_wilson(
        statistics.seeds_then_records_ci([s[key] for s in two]), cell_mean, N_RECORDS), rel=1e-12)
    teacher_key = "avg_f1_s_vs_t_script1"  # records without a teacher prediction are left out
    kept = ~np.isnan(one[teacher_key])
    assert kept.sum() == N_RECORDS - len(WITHOUT_TEACHER)
    assert cells[0].intervals[teacher_key][:2] == pytest.approx(statistics.score_mean_ci(one[teacher_key][kept]))
    for cell in cells:  # the Wilson floor in every interval
        for key, interval in cell.intervals.items():
            wilson = statistics.wilson_ci(cell.stats[key][0], N_RECORDS)
            assert interval.low <= wilson[0] + 1e-12 and interval.high >= wilson[1] - 1e-12, key
    assert "avg_loss" not in cells[0].intervals and "avg_inference_time_per_sample_ms" not in cells[0].intervals


@pytest.mark.parametrize("quality", [0.05, 0.3, 0.5, 0.8])
def test_conservative_interval_contains_the_bootstrap_one(tmp_path, quality):
    scores = per_record_scores(quality, seed=7)
    write_run(tmp_path / "with", 0.5, 7, scores, truths())
    write_run(tmp_path / "without", 0.5, 7, scores, truths(), predictions=False)
    (bootstrapped,), _, _ = load(tmp_path / "with")
    (conservative,), _, _ = load(tmp_path / "without")
    for metric in BOUNDED:
        boot, bound = bootstrapped.intervals[metric.key], conservative.intervals[metric.key]
        assert (boot.method, bound.method) == ("records", "bounded")
        if metric.binary:  # 0/1 scores reach the variance bound: the two intervals agree
            assert bound.high - bound.low == pytest.approx(boot.high - boot.low, rel=0.15), metric.key
        else:
            assert bound.low <= boot.low + 1e-12 and boot.high <= bound.high + 1e-12, (metric.key, boot, bound)
    mean = conservative.stats[MAIN.key][0]
    assert conservative.intervals[MAIN.key][:2] == pytest.approx(statistics.bounded_mean_ci(mean, N_RECORDS))
    teacher = conservative.intervals["avg_accuracy_s_vs_t_script1"]  # n = records with a teacher prediction
    assert teacher[:2] == pytest.approx(statistics.bounded_mean_ci(
        conservative.stats["avg_accuracy_s_vs_t_script1"][0], N_RECORDS - len(WITHOUT_TEACHER)))


def test_conservative_interval_with_seeds_adds_the_seed_spread(tmp_path):
    for seed, quality in ((1, 0.3), (2, 0.4)):
        write_run(tmp_path, 0.5, seed, per_record_scores(quality, seed), truths(), predictions=False)
    (cell,), _, _ = load(tmp_path)
    mean, std, n = cell.stats[MAIN.key]
    low, high = statistics.bounded_mean_ci(mean, N_RECORDS)
    seed_half = 1.959963984540054 * std / np.sqrt(n)
    assert cell.intervals[MAIN.key].method == "bounded+seeds"
    assert cell.intervals[MAIN.key][:2] == pytest.approx(
        (mean - np.hypot(mean - low, seed_half), mean + np.hypot(high - mean, seed_half)))


def _rewrite(path: Path, change):
    """Apply `change` to the list of predictions.jsonl lines."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")


def _set(lines, index, key, value):
    record = json.loads(lines[index])
    record[key] = value
    lines[index] = json.dumps(record)
    return lines


# (id, change to the lines of predictions.jsonl, reason printed): each makes the run fall back.
BAD_PREDICTIONS = [
    ("mean_differs", lambda lines: _set(lines, 0, "accuracy_s_vs_gt_script1", 1.0 if
                                        json.loads(lines[0])["accuracy_s_vs_gt_script1"] < 0.5 else 0.0),
     "mean of accuracy_s_vs_gt_script1 is"),
    ("fewer_records", lambda lines: lines[:-1], "399 records, the summary evaluated 400"),
    ("out_of_order", lambda lines: [lines[1], lines[0]] + lines[2:], "line 1: not the object with index 0"),
    ("broken_json", lambda lines: lines[:3] + ["{oops"] + lines[3:], "line 4: invalid JSON"),
    ("not_a_score", lambda lines: _set(lines, 2, "f1_s_vs_gt_script1", 1.5), "line 3: f1_s_vs_gt_script1 is not a"),
]


@pytest.mark.parametrize("change,reason", [c[1:] for c in BAD_PREDICTIONS], ids=[c[0] for c in BAD_PREDICTIONS])
def test_unusable_predictions_fall_back_to_the_conservative_interval(tmp_path, change, reason):
    run_dir = write_run(tmp_path, 0.5, 1, per_record_scores(0.4, 1), truths())
    _rewrite(run_dir / schema.PREDICTIONS_FILENAME, change)
    (cell,), predictions, err = load(tmp_path)
    assert predictions == {}
    assert err.startswith(f"skip {run_dir / schema.PREDICTIONS_FILENAME}: ") and reason in err, err
    assert len(err.splitlines()) == 1 and cell.intervals[MAIN.key].method == "bounded"


@pytest.fixture
def paired_sweep(tmp_path):
    """alpha 0 and 0.1 identical, alpha 0.5 clearly worse, alpha 0.9 on another validation set, alpha 1
    with one changed record, alpha 0.3 on other lines with the same texts, alpha 0.7 without
    predictions.jsonl, alpha 0.8 whose two seeds evaluated different records; one seed each otherwise."""
    good = per_record_scores(0.5, seed=1)
    write_run(tmp_path, 0.0, 1, good, truths())
    write_run(tmp_path, 0.1, 1, good, truths())
    write_run(tmp_path, 0.3, 1, per_record_scores(0.4, seed=6), truths(), first_line=1001)
    write_run(tmp_path, 0.5, 1, per_record_scores(0.3, seed=2), truths())
    write_run(tmp_path, 0.7, 1, per_record_scores(0.5, seed=3), truths(), predictions=False)
    write_run(tmp_path, 0.8, 1, per_record_scores(0.4, seed=7), truths())
    write_run(tmp_path, 0.8, 2, per_record_scores(0.4, seed=8, n=300), truths(300))
    write_run(tmp_path, 0.9, 1, per_record_scores(0.4, seed=4, n=300), truths(300))
    write_run(tmp_path, 1.0, 1, per_record_scores(0.4, seed=5), truths(changed=3))
    return tmp_path, good


def bounded_matrix(scores: dict) -> np.ndarray:
    """(N, M) per-record scores of the bounded metrics in BOUNDED order."""
    return np.column_stack([scores[m.key] for m in BOUNDED])


def test_paired_comparisons_with_the_best_cell(paired_sweep):
    root, good = paired_sweep
    cells, predictions, _ = load(root)
    result = comparisons.compare_cells(cells, predictions, MAIN)
    assert comparisons.cell_name(result.reference) == "alpha=0, T=2"  # the best mean; ties: the first
    rows = {(row.cell.alpha, row.metric.key): row for row in result.rows}
    assert {alpha for alpha, _ in rows} == {0.1, 0.5}
    same, worse = rows[0.1, MAIN.key], rows[0.5, MAIN.key]
    assert (same.result.difference, same.result.p_value, same.significant) == (0.0, 1.0, False)
    assert same.result.ci_low < 0 < same.result.ci_high  # no spread: conservative, never zero width
    worse_scores = per_record_scores(0.3, seed=2)
    expected = statistics.paired_tests(bounded_matrix(worse_scores), bounded_matrix(good),
                                       [m.binary for m in BOUNDED])
    assert worse.result == expected[BOUNDED.index(MAIN)]
    assert worse.result.difference < -0.1 and worse.significant
    assert (worse.result.test, worse.result.ci_method, worse.result.records) == (
        statistics.SIGN_FLIP_MONTE_CARLO, statistics.PAIRED_BOOTSTRAP, N_RECORDS)
    strict = rows[0.5, "avg_strict_exact_match_s_vs_gt"]
    assert strict.result.test == statistics.MCNEMAR_EXACT
    assert strict.result.p_value == statistics.mcnemar_exact(
        worse_scores["avg_strict_exact_match_s_vs_gt"] == 1.0,
        good["avg_strict_exact_match_s_vs_gt"] == 1.0)
    assert rows[0.5, "avg_f1_s_vs_t_script1"].result.records == N_RECORDS - len(WITHOUT_TEACHER)
    assert result.refused == [
        "alpha=0.3, T=2: not compared, it evaluated other records than the reference (400 records, the reference "
        "400, 0 line_numbers in common)",
        "alpha=0.7, T=2: not compared, no predictions.jsonl for every run",
        f"alpha=0.8, T=2: not compared, its seeds evaluated different records (400 in {root}/alpha_0.8_temp_2.0_seed_1"
        f"/predictions.jsonl, 300 in {root}/alpha_0.8_temp_2.0_seed_2/predictions.jsonl)",
        "alpha=0.9, T=2: not compared, it evaluated other records than the reference (300 records, the reference "
        "400, 300 line_numbers in common)",
        "alpha=1, T=2: not compared, its record at line_number 4 has another ground truth than the reference's "
        "(another validation file?)"]
    assert result.verdict.startswith("Not distinguishable from the best (alpha=0, T=2, Accuracy vs ground truth ")
    assert result.verdict.endswith("paired over 400 records: alpha=0.1, T=2. Distinguishable: alpha=0.5, T=2.")


def test_reference_option(paired_sweep):
    root, _ = paired_sweep
    cells, predictions, _ = load(root)
    result = comparisons.compare_cells(cells, predictions, MAIN, "alpha=0.5,T=2")
    assert comparisons.cell_name(result.reference) == "alpha=0.5, T=2"
    assert {row.cell.alpha for row in result.rows} == {0.0, 0.1}
    assert result.verdict.startswith("Not distinguishable from the reference (alpha=0.5, T=2")
    with pytest.raises(comparisons.ReferenceSpecError, match="alpha=0.33 matches 0 cells"):
        comparisons.compare_cells(cells, predictions, MAIN, "alpha=0.33")
    with pytest.raises(comparisons.ReferenceSpecError, match="no cell has the setting beta"):
        comparisons.compare_cells(cells, predictions, MAIN, "beta=1")
    with pytest.raises(comparisons.ReferenceSpecError, match="expected <setting>=<value>"):
        comparisons.compare_cells(cells, predictions, MAIN, "alpha")


def test_a_reference_whose_seeds_evaluated_different_records_is_refused_in_one_line(paired_sweep, tmp_path_factory):
    root, _ = paired_sweep
    out_dir = tmp_path_factory.mktemp("graphs")
    code, out, err = run_cli(["--results_dir", root, "--output_dir", out_dir, "--reference", "alpha=0.8"])
    assert code == 0 and "Traceback" not in err, err
    assert ("No paired comparison: the reference alpha=0.8, T=2 cannot be paired: its seeds evaluated different "
            "records (400 in") in out
    assert not (out_dir / "comparisons.csv").exists() and (out_dir / "summary.csv").exists()


def test_one_record_per_cell_is_never_significant(tmp_path):
    for alpha, quality in ((0.0, 0.9), (0.5, 0.1)):
        scores = {m.key: np.array([1.0 if quality > 0.5 else 0.0]) for m in BOUNDED}
        write_run(tmp_path, alpha, 1, scores, truths(1))
    cells, predictions, _ = load(tmp_path)
    result = comparisons.compare_cells(cells, predictions, MAIN)
    assert result.rows and all(not row.significant and row.result.p_value == 1.0 for row in result.rows)
    assert all(row.result.ci_low < row.result.difference < row.result.ci_high or row.result.ci_low == -1.0
               for row in result.rows)
    for cell in cells:
        assert all(interval.high - interval.low > 0.5 for interval in cell.intervals.values())  # one record


def run_cli(argv):
    """alpha_graphs.main in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = alpha_graphs.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_graph_script_writes_intervals_and_comparisons(paired_sweep, tmp_path_factory):
    root, _ = paired_sweep
    out_dir = tmp_path_factory.mktemp("graphs")
    code, out, err = run_cli(["--results_dir", root, "--output_dir", out_dir])
    assert (code, err) == (0, "")
    with open(out_dir / "comparisons.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == comparisons.csv_columns(["alpha", "temperature"]) == (
        "alpha", "temperature", "metric", "reference_alpha", "reference_temperature", "difference", "ci_low",
        "ci_high", "p_value", "significant", "test", "ci_method", "records")
    assert {(r["alpha"], r["reference_alpha"]) for r in rows} == {("0.1", "0"), ("0.5", "0")}
    assert {r["metric"] for r in rows} == set(intervals.BOUNDED)
    main_rows = {r["alpha"]: r for r in rows if r["metric"] == MAIN.key}
    assert (main_rows["0.1"]["significant"], main_rows["0.5"]["significant"]) == ("false", "true")
    with open(out_dir / "summary.csv", newline="") as f:
        summary = {r["alpha"]: r for r in csv.DictReader(f)}
    assert summary["0"]["ci_method"] == "bootstrap over records, at least the Wilson interval"
    assert summary["0.7"]["ci_method"].startswith("conservative")
    low, high = (float(summary["0"][f"{MAIN.key}_ci_{side}"]) for side in ("low", "high"))
    assert low < float(summary["0"][f"{MAIN.key}_mean"]) < high
    assert summary["0"]["avg_loss_ci_low"] == "nan"  # unbounded: no interval
    text = (out_dir / "summary.md").read_text()
    assert "## Paired comparisons with alpha=0, T=2" in text and "no interval is given for them" in text
    assert "- alpha=0.9, T=2: not compared, it evaluated other records than the reference" in text
    assert "| sign-flip permutation (Monte Carlo) | paired percentile bootstrap | 400 |" in text
    assert "Distinguishable: alpha=0.5, T=2." in out


def test_bad_reference_exits_2(paired_sweep, tmp_path):
    root, _ = paired_sweep
    code, _, err = run_cli(["--results_dir", root, "--output_dir", tmp_path / "g", "--reference", "alpha=x"])
    assert code == 2 and err == "error: --reference 'alpha=x': 'x' is not a number\n"
    assert not (tmp_path / "g").exists()


def test_a_significant_p_whose_conservative_interval_holds_zero_is_marked():
    """8 of 300 records better in the reference only: the exact sign flip gives p = 2 / 2^8, while the
    conservative interval (fewer than 10 records differ) still holds 0; the table says both."""
    reference = np.zeros(300)
    reference[:8] = 1.0
    result = statistics.paired_test(np.zeros(300), reference)
    assert result.p_value == pytest.approx(2 / 2 ** 8) and result.ci_low < 0.0 < result.ci_high
    assert result.ci_method == statistics.BOUNDED_DIFFERENCE
    marked = comparisons.Comparison(None, MAIN, None, result)
    assert marked.significant and marked.significance_text == "yes (interval holds 0)"
    clear = comparisons.Comparison(None, MAIN, None, statistics.PairedResult(-0.1, -0.2, -0.05, "m", 0.001, "t", 300))
    assert clear.significance_text == "yes"
    odd = comparisons.Comparison(None, MAIN, None, statistics.PairedResult(-0.1, -0.2, -0.05, "m", 0.2, "t", 300))
    assert odd.significance_text == "no (interval excludes 0)"


def test_each_cell_is_paired_with_the_retrieval_baseline_on_its_own_records(tmp_path):
    retrieval = (np.random.default_rng(5).random(N_RECORDS) < 0.2).astype(float)
    good, worse = per_record_scores(0.6, seed=1), per_record_scores(0.15, seed=2)
    for alpha, scores in ((0.0, good), (0.5, worse)):
        write_run(tmp_path, alpha, 1, {**scores, "avg_accuracy_r_vs_gt_script1": retrieval}, truths())
    cells, predictions, _ = load(tmp_path)
    assert "avg_accuracy_r_vs_gt_script1" in cells[0].intervals  # the baseline's interval, for its band
    result = comparisons.compare_cells(cells, predictions, MAIN)
    baseline = {row.cell.alpha: row for row in result.rows if row.baseline}
    assert set(baseline) == {0.0, 0.5} and {row.baseline for row in baseline.values()} == {"retrieval"}
    expected = statistics.paired_tests(good[MAIN.key][:, None], retrieval[:, None], [MAIN.binary],
                                       results.CONFIDENCE)[0]
    assert baseline[0.0].result == expected and baseline[0.0].significant and expected.difference > 0
    assert not any(row.baseline for row in result.rows if row.metric.key == MAIN.key and not row.baseline)
    assert "the teacher and the baselines" in comparisons.markdown_section(result)
