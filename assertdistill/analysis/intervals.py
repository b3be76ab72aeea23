"""Per-record scores of a run (predictions.jsonl) and the confidence interval of each cell's mean.

A cell whose runs all have usable per-record scores over >= statistics.MIN_BOOTSTRAP_RECORDS records
gets a percentile bootstrap over its records (with several seeds: resample the seeds, then the
records within each). Otherwise a metric in [0, 1] gets the conservative interval its mean and record
count allow (variance <= p(1 - p)), widened by the spread of the seed means when the cell has several
seeds. No interval is narrower than the Wilson interval of the cell's mean and record count.
Unbounded metrics (losses, times) get no interval.
"""

import math
import stat
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from assertdistill.analysis.results import (
    CONFIDENCE,
    METRICS,
    REFERENCE_METRICS,
    Cell,
    Interval,
    Metric,
    Run,
    json_lines,
)
from assertdistill.core.schema import (
    NUM_EVAL_SAMPLES,
    PREDICTIONS_FILENAME,
    ROW_GROUND_TRUTH,
    ROW_INDEX,
    ROW_LINE_NUMBER,
    SUMMARY_FILENAME,
    unaveraged,
)
from assertdistill.scoring import statistics

MEAN_TOLERANCE = 1e-6  # |mean of the per-record column - the summary's avg_| allowed (JSON float rounding)
BOUNDED = {m.key: m for m in METRICS if m.bounded}  # the trained model's per-record metrics: intervals, comparisons
# ... and with the teacher's and the baselines' (REFERENCE_METRICS): every per-record metric gets its interval
WITH_INTERVALS = {**BOUNDED, **{m.key: m for m in REFERENCE_METRICS}}


class PredictionsError(ValueError):
    """A predictions.jsonl that cannot be used, with the reason."""


@dataclass(frozen=True)
class RecordScores:
    """One run's per-record scores: metric key -> (N,) values (NaN where a record has none)."""

    path: Path
    line_numbers: tuple[int, ...] | None  # (N,) the records' lines in the validation file (None: not recorded)
    ground_truths: tuple[str, ...]  # (N,) checks that a line number means the same record in two runs
    scores: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ground_truths)


def load_predictions(run: Run) -> RecordScores | None:
    """The per-record scores beside run's summary; None when it has no predictions.jsonl.

    Raises PredictionsError when the file is unreadable, out of order, or its column means disagree
    with the summary (then it belongs to another evaluation and must not be used).
    """
    path = run.path.parent / PREDICTIONS_FILENAME
    if run.path.name != SUMMARY_FILENAME or not path.exists():
        return None  # a flat summary (the thesis's layout) has no per-run directory
    if not path.is_file() or not stat.S_ISREG(path.stat().st_mode):
        raise PredictionsError("not a regular file (a FIFO, device or folder)")
    truths, lines, columns = [], [], {key: [] for key in WITH_INTERVALS}
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, record, error in json_lines(f):
                if error is not None:
                    raise PredictionsError(f"line {lineno}: invalid JSON ({error})")
                if not isinstance(record, dict) or record.get(ROW_INDEX) != len(truths):
                    raise PredictionsError(f"line {lineno}: not the object with {ROW_INDEX} {len(truths)}")
                truths.append(str(record.get(ROW_GROUND_TRUTH)))
                line = record.get(ROW_LINE_NUMBER)
                lines.append(line if isinstance(line, int) and not isinstance(line, bool) else None)
                for key, values in columns.items():
                    values.append(_score(record.get(WITH_INTERVALS[key].record_key), lineno, key))
    except (OSError, UnicodeDecodeError) as e:
        raise PredictionsError(f"cannot be read ({e})") from e
    if not truths:
        raise PredictionsError("holds no record")
    scores = {key: np.asarray(values) for key, values in columns.items() if not np.isnan(values).all()}
    _check_against_summary(run, len(truths), scores)
    return RecordScores(path, None if None in lines else tuple(lines), tuple(truths), scores)


def _score(value, lineno: int, key: str) -> float:
    """A per-record score in [0, 1] as float (NaN when absent or null)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:  # NaN too
        raise PredictionsError(f"line {lineno}: {unaveraged(key)} is not a score in [0, 1]: {value!r}")
    return float(value)


def _check_against_summary(run: Run, count: int, scores: dict[str, np.ndarray]) -> None:
    """Raise PredictionsError unless the records' count and column means are the summary's."""
    expected = run.metrics.get(NUM_EVAL_SAMPLES)
    if expected is not None and expected != count:
        raise PredictionsError(f"{count} records, the summary evaluated {expected:g}")
    for key, values in scores.items():
        if key in run.metrics and abs(float(np.nanmean(values)) - run.metrics[key]) > MEAN_TOLERANCE:
            raise PredictionsError(f"mean of {unaveraged(key)} is {np.nanmean(values):.6g}, "
                                   f"the summary says {run.metrics[key]:.6g}")


def load_all_predictions(runs: list[Run], err) -> dict[Path, RecordScores]:
    """Summary path -> per-record scores for every run that has usable ones; problems reported to `err`."""
    loaded = {}
    for run in runs:
        try:
            scores = load_predictions(run)
        except PredictionsError as e:
            print(f"skip {run.path.parent / PREDICTIONS_FILENAME}: {e}; its cell gets the conservative interval",
                  file=err)
            continue
        if scores is not None:
            loaded[run.path] = scores
    return loaded


def cell_records(cell: Cell, predictions: dict[Path, RecordScores]) -> list[RecordScores] | None:
    """The per-record scores of every run of the cell, or None when any run lacks them."""
    found = [predictions.get(run.path) for run in cell.runs]
    return None if any(scores is None for scores in found) else found


def attach_intervals(cells: list[Cell], predictions: dict[Path, RecordScores]) -> None:
    """Fill cell.intervals for every bounded metric the cell has: bootstrap where it can, else conservative."""
    for cell in cells:
        records = cell_records(cell, predictions)
        keys = [key for key in WITH_INTERVALS if key in cell.stats]
        if records is not None:
            cell.intervals.update(_bootstrap_intervals(records, keys))
        for key in keys:
            if key not in cell.intervals:
                interval = conservative_interval(cell, WITH_INTERVALS[key])
                if interval is not None:
                    cell.intervals[key] = interval


def _bootstrap_intervals(records: list[RecordScores], keys: list[str]) -> dict[str, Interval]:
    """Bootstrap intervals of the metrics every run has per record; metrics sharing the same records
    (the same NaN pattern) are resampled together, with the same draws."""
    groups: dict[tuple, list[str]] = {}
    for key in keys:
        if all(key in r.scores for r in records):
            pattern = tuple(np.isnan(r.scores[key]).tobytes() for r in records)
            groups.setdefault(pattern, []).append(key)
    method = "records" if len(records) == 1 else "seeds+records"
    intervals = {}
    for group in groups.values():
        per_seed = []
        for run_records in records:
            matrix = np.column_stack([run_records.scores[key] for key in group])  # (N, M)
            per_seed.append(matrix[~np.isnan(matrix).any(axis=1)])
        counts = [len(matrix) for matrix in per_seed]
        if min(counts) < statistics.MIN_BOOTSTRAP_RECORDS:
            continue  # too few records to trust the bootstrap: the conservative interval
        low, high = statistics.seeds_then_records_ci(per_seed, confidence=CONFIDENCE)
        means = np.mean([matrix.mean(axis=0) for matrix in per_seed], axis=0)  # (M,) the cell means
        for key, lo, hi, mean in zip(group, np.atleast_1d(low), np.atleast_1d(high), np.atleast_1d(means)):
            floored = statistics.at_least_wilson((float(lo), float(hi)), float(mean), min(counts), CONFIDENCE)
            intervals[key] = Interval(*floored, method)
    return intervals


def conservative_interval(cell: Cell, metric: Metric) -> Interval | None:
    """The interval a [0, 1] metric's cell mean allows from the record count alone; None without a count.

    With several seeds, the half-width of the record term and the normal half-width of the seed
    means' spread (z * std / sqrt(seeds)) are added in quadrature.
    """
    mean, std, seeds = cell.stats[metric.key]
    counts = [metric.count(run.metrics) for run in cell.runs if metric.key in run.metrics]
    if not counts or any(c is None or c < 1 for c in counts) or not 0.0 <= mean <= 1.0:
        return None
    low, high = statistics.bounded_mean_ci(mean, int(min(counts)), confidence=CONFIDENCE)
    if seeds < 2:
        return Interval(low, high, "bounded")
    z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2.0)
    seed_half = z * std / math.sqrt(seeds)
    below, above = math.hypot(mean - low, seed_half), math.hypot(high - mean, seed_half)
    return Interval(max(0.0, mean - below), min(1.0, mean + above), "bounded+seeds")
