"""Load distillation summaries and per-epoch logs from a sweep; aggregate metrics over seeds.

A run is one summary: `<run_dir>/distillation_summary.json` as script.py and sweep.sh write it, or a
flat `<any name>.json` directly in the results directory, as the thesis kept them
(results_alpha/alpha0.1.json, ...). Both layouts may be mixed in one directory. Only the thesis keys
are required; everything else is optional. A value that is not a finite number in its range is left
out with one line naming file and key; runs are grouped into cells by every setting (axes.py).
"""

import csv
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from assertdistill.analysis import axes
from assertdistill.core.schema import (
    ACCURACY,
    ARG_ALPHA,
    ARG_SEED,
    ARG_TEMPERATURE,
    ARGS,
    AVG_HARD_LOSS,
    AVG_INFERENCE_TIME_PER_SAMPLE_MS,
    AVG_LOSS,
    AVG_SOFT_LOSS,
    F1,
    FINAL_EVALUATION_METRICS,
    HISTORY_EPOCH,
    NUM_EVAL_SAMPLES,
    NUM_EVAL_SAMPLES_WITH_TEACHER_PREDICTION,
    PRECISION,
    RECALL,
    S_VS_GT_SCRIPT1,
    S_VS_T_SCRIPT1,
    SIMILARITY_AVG,
    STUDENT_SHARE_OF_TEACHER_ACCURACY,
    SUMMARY_FILENAME,
    T_VS_GT_SCRIPT1,
    TRAINING_DURATION_SECONDS,
    metric_key,
    unaveraged,
)
from assertdistill.scoring import registry

LAYOUTS = f"*.json or */{SUMMARY_FILENAME}"  # the two layouts load_runs reads, for messages
ARG_KEYS = {"alpha": ARG_ALPHA, "temperature": ARG_TEMPERATURE, "seed": ARG_SEED}  # required args, as numbers


@dataclass(frozen=True)
class Metric:
    """One plotted/aggregated quantity; `reference_keys` name the same score of the teacher and the baselines."""

    key: str
    label: str
    unit: str = ""
    fmt: str = ".4f"  # how summary.md prints mean and std
    reference_keys: tuple[str, ...] = ()  # drawn as reference lines beside it (the teacher's first)
    required: bool = True  # thesis summaries always have it; a run without it is incomplete
    bounded: bool = False  # a mean of per-record scores in [0, 1]: it gets a confidence interval
    vs_teacher: bool = False  # averaged only over records with a teacher prediction
    lower_is_better: bool = False
    binary: bool = False  # 0 or 1 per record: paired comparisons use McNemar's exact test
    reference_label: str = ""  # a reference metric's: whose score it is ("teacher"); "" for a plotted metric

    @property
    def reference_key(self) -> str | None:
        """The teacher's value of the same score, if any."""
        return self.reference_keys[0] if self.reference_keys else None

    @property
    def record_key(self) -> str:
        """Its per-record name in predictions.jsonl: the summary key without the `avg_` prefix."""
        return unaveraged(self.key)

    def count(self, metrics: dict[str, float]) -> float | None:
        """How many records a run's mean of this metric is over, from the summary's counts (None: unknown)."""
        if self.vs_teacher and NUM_EVAL_SAMPLES_WITH_TEACHER_PREDICTION in metrics:
            return metrics[NUM_EVAL_SAMPLES_WITH_TEACHER_PREDICTION]
        return metrics.get(NUM_EVAL_SAMPLES)


def record_metric(metric: registry.RecordMetric) -> Metric:
    """The Metric of one per-record metric of the registry: bounded, with its counterparts as references."""
    references = tuple(other.summary_key for other in registry.counterparts(metric))
    return Metric(metric.summary_key, metric.label, required=metric.required, bounded=True,
                  vs_teacher=metric.vs_teacher, binary=metric.score.binary, reference_keys=references,
                  reference_label="" if metric.prediction.trained else metric.prediction.name)


# Every per-record metric of the registry: the trained model's are plotted and compared (the thesis's pairs
# first), the teacher's and the baselines' are references drawn beside them, with their intervals.
_DISPLAY = (ACCURACY, F1, PRECISION, RECALL, SIMILARITY_AVG)  # the order of a pair's scores in tables and figures


def _display_order(metric: registry.RecordMetric) -> tuple:
    """Thesis pairs (vs ground truth first), then strict matches, the other script1 pairs, the parse checks."""
    reference = bool(metric.pair.reference)
    kind = 0 if metric.required else 1 if metric.score.binary and reference else 2 if reference else 3
    score = _DISPLAY.index(metric.score.name) if metric.score.name in _DISPLAY else 0
    return kind, metric.vs_teacher, score


_TRAINED = [record_metric(m) for m in sorted((m for m in registry.RECORD_METRICS if m.prediction.trained),
                                             key=_display_order)]
_FIRST = [m for m in _TRAINED if m.required]
METRICS: tuple[Metric, ...] = (
    *_FIRST,
    Metric(AVG_LOSS, "Eval loss (total)", lower_is_better=True),
    Metric(AVG_HARD_LOSS, "Eval hard loss (vs ground truth)", lower_is_better=True),
    Metric(AVG_SOFT_LOSS, "Eval soft loss (divergence from teacher)", lower_is_better=True),
    Metric(AVG_INFERENCE_TIME_PER_SAMPLE_MS, "Inference time per sample", unit="ms", fmt=".1f",
           lower_is_better=True),
    Metric(TRAINING_DURATION_SECONDS, "Training time", unit="s", fmt=".0f", lower_is_better=True),
    Metric(STUDENT_SHARE_OF_TEACHER_ACCURACY, "Student share of teacher accuracy", required=False),
    *(m for m in _TRAINED if not m.required),
)
REFERENCE_METRICS: tuple[Metric, ...] = tuple(record_metric(m) for m in registry.RECORD_METRICS
                                              if not m.prediction.trained)
METRICS_BY_KEY = {m.key: m for m in METRICS + REFERENCE_METRICS}
TOP_LEVEL_KEYS = (TRAINING_DURATION_SECONDS,)  # metrics stored beside, not inside, the eval dict


class SummaryError(ValueError):
    """A summary file that cannot be used, with the reason."""


class NoResultsError(RuntimeError):
    """No usable summary under the results directory; `skipped` lists (path, reason) of the unusable ones."""

    def __init__(self, message: str, skipped=()):
        super().__init__(message)
        self.skipped = list(skipped)


class _AlphaTemperature:
    """`alpha` and `temperature` of an object with `settings` (every run and cell has both)."""

    settings: dict

    @property
    def alpha(self) -> float:
        """The KL-loss weight."""
        return self.settings[axes.ALPHA.name]

    @property
    def temperature(self) -> float:
        """The softmax temperature."""
        return self.settings[axes.TEMPERATURE.name]


@dataclass(frozen=True)
class Run(_AlphaTemperature):
    """One finished training run: its settings (axes.setting_name -> coordinate), seed and numeric final metrics."""

    path: Path
    settings: dict  # every cell-defining setting of args but the seed: alpha, temperature, ...
    seed: float
    metrics: dict[str, float]
    problems: tuple[str, ...] = ()  # '<key> ...: left out' for each value of the summary that was not usable

    def coordinates(self, pool_seeds: bool = True) -> dict:
        """The cell this run belongs to: its settings, and its seed unless seeds are pooled."""
        return self.settings if pool_seeds else {**self.settings, axes.SEED.name: self.seed}


CONFIDENCE = 0.95  # of every interval and paired comparison
# How a cell's interval was made: method code -> the words figures and tables use.
INTERVAL_METHODS = {
    "records": "bootstrap over records, at least the Wilson interval",
    "seeds+records": "bootstrap over seeds, then records, at least the Wilson interval",
    "bounded": "conservative, from the record count and variance <= p(1-p)",
    "bounded+seeds": "conservative from the record count, plus the spread over seeds",
}


class Interval(NamedTuple):
    """A confidence interval of a cell's mean and its method (a key of INTERVAL_METHODS)."""

    low: float
    high: float
    method: str


@dataclass
class Cell(_AlphaTemperature):
    """Seeds of one cell (runs agreeing on every setting) aggregated: metric key -> (mean, std, count), intervals."""

    settings: dict  # setting name -> coordinate, shared by every run of the cell
    axes: tuple[str, ...] = ()  # the settings that tell the folder's cells apart (alpha, temperature first)
    runs: list[Run] = field(default_factory=list)
    stats: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)  # bounded metrics only

    @property
    def n(self) -> int:
        """Number of runs (seeds) in the cell."""
        return len(self.runs)

    def value(self, name: str):
        """The cell's coordinate on one setting (None: not recorded)."""
        return self.settings.get(axes.canonical_name(name))

    @property
    def name(self) -> str:
        """'alpha=0.5, T=2' (and every other axis of the folder: ', student_model_name=dir2')."""
        return ", ".join(f"{axes.axis(a).column if a in axes.ALWAYS_SHOWN else a}={axes.format_value(self.value(a))}"
                         for a in self.axes)


def as_number(value, what: str) -> float:
    """A JSON number or numeric string as float; raise SummaryError for anything else."""
    if isinstance(value, bool):
        raise SummaryError(f"{what} is a boolean, expected a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise SummaryError(f"{what} is not numeric: {value!r}")




def unusable(key: str, value: float) -> str | None:
    """Why a summary's metric value cannot be used ('is nan', 'is 1.5, outside [0, 1]'); None when it can."""
    if not math.isfinite(value):
        return f"is {value!r}"
    metric = METRICS_BY_KEY.get(key)
    if metric is not None and metric.bounded and not 0.0 <= value <= 1.0:
        return f"is {value!r}, outside [0, 1]"
    if key == NUM_EVAL_SAMPLES and value <= 0:
        return f"is {value!r}, not a positive record count"
    if key == NUM_EVAL_SAMPLES_WITH_TEACHER_PREDICTION and value < 0:
        return f"is {value!r}, not a record count"
    return None


def parse_summary(path: Path, data) -> Run:
    """Validate one decoded summary and turn it into a Run; raise SummaryError if unusable."""
    if not isinstance(data, dict):
        raise SummaryError("top level is not a JSON object")
    if ARGS not in data and FINAL_EVALUATION_METRICS not in data:
        raise SummaryError(f"not a distillation summary (neither '{ARGS}' nor '{FINAL_EVALUATION_METRICS}')")
    args = data.get(ARGS)
    if not isinstance(args, dict):
        raise SummaryError(f"missing '{ARGS}' object")
    hyper = {}
    for name, arg_key in ARG_KEYS.items():
        if arg_key not in args:
            raise SummaryError(f"missing {ARGS}.{arg_key}")
        hyper[name] = as_number(args[arg_key], f"{ARGS}.{arg_key}")
        if not math.isfinite(hyper[name]):
            raise SummaryError(f"{ARGS}.{arg_key} is not finite: {args[arg_key]!r}")
    metrics, problems = _final_metrics(data)
    if hyper["alpha"] == 0 and metrics.get(AVG_SOFT_LOSS) == 0.0:
        del metrics[AVG_SOFT_LOSS]  # the loss skips the divergence at alpha 0 and writes 0.0 (as the thesis's): no value
    teacher_acc = metrics.get(metric_key(ACCURACY, T_VS_GT_SCRIPT1))
    student_acc = metric_key(ACCURACY, S_VS_GT_SCRIPT1)
    if STUDENT_SHARE_OF_TEACHER_ACCURACY not in metrics and teacher_acc and student_acc in metrics:  # not of 0
        metrics[STUDENT_SHARE_OF_TEACHER_ACCURACY] = metrics[student_acc] / teacher_acc
    settings = {axes.setting_name(key): axes.setting_value(value) for key, value in {**axes.DEFAULTS, **args}.items()
                if key not in axes.RUN_ONLY_SETTINGS and key != ARG_SEED}
    settings.update({name: hyper[name] for name in axes.ALWAYS_SHOWN})
    return Run(path, settings, hyper["seed"], metrics, tuple(problems))


def _final_metrics(data: dict) -> tuple[dict[str, float], list[str]]:
    """The numeric final metrics, and one '<key> is nan: left out' line per value that is not usable."""
    eval_metrics = data.get(FINAL_EVALUATION_METRICS)
    if not isinstance(eval_metrics, dict):
        raise SummaryError(f"missing '{FINAL_EVALUATION_METRICS}' object")
    metrics, problems, left_out = {}, [], set()
    values = [(key, value, f"{FINAL_EVALUATION_METRICS}.{key}") for key, value in eval_metrics.items()]
    values += [(key, data[key], key) for key in TOP_LEVEL_KEYS if key in data]
    for key, value, where in values:
        known = METRICS_BY_KEY.get(key)
        try:
            number = as_number(value, where)
        except SummaryError:
            if known is not None and known.required:
                raise
            continue  # an unknown non-numeric extra is ignored: nothing plots it
        why = unusable(key, number)
        if why is None:
            metrics[key] = number
        elif key == NUM_EVAL_SAMPLES:  # every mean of the summary is over this count
            raise SummaryError(f"{where} {why}: its means are over no known number of records")
        else:
            problems.append(f"{where} {why}: left out")
            left_out.add(key)
    missing = [m.key for m in METRICS if m.required and m.key not in metrics and m.key not in left_out]
    if missing:
        raise SummaryError(f"incomplete, missing {', '.join(missing)}")
    return metrics, problems


def summary_paths(results_dir: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(flat *.json files directly in results_dir and */distillation_summary.json at any depth, sorted;
    (path, reason) for each one that is not a regular file or a run folder symlink that loops).

    Symlinked folders are followed; one that leads back to a folder already being walked is reported.
    """
    found, skipped = set(), []

    def regular(path: Path) -> bool:
        try:
            mode = path.stat().st_mode
        except OSError as e:
            skipped.append((path, f"cannot be read ({e.strerror or e})"))
            return False
        if not stat.S_ISREG(mode):
            skipped.append((path, "not a regular file (a FIFO, device or folder)"))
        return stat.S_ISREG(mode)

    found.update(path for path in results_dir.glob("*.json") if not path.is_dir() and regular(path))
    on_walk = set()

    def walk(folder: Path) -> None:
        info = folder.stat()
        on_walk.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as e:
            skipped.append((folder, f"cannot be listed ({e.strerror or e})"))
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.name == SUMMARY_FILENAME and not entry.is_dir():
                if regular(path):
                    found.add(path)
            elif entry.is_dir():  # follows symlinks
                target = path.stat()
                if (target.st_dev, target.st_ino) in on_walk:
                    skipped.append((path, f"symlink loop: leads back to {os.path.realpath(path)}"))
                else:
                    walk(path)
        on_walk.discard((info.st_dev, info.st_ino))

    walk(results_dir)
    return sorted(found), skipped


def load_runs(results_dir: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """All usable runs in results_dir (both layouts), and (path, reason) for each file skipped."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise NoResultsError(f"results directory {results_dir} does not exist")
    paths, skipped = summary_paths(results_dir)
    runs, seen = [], {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                run = parse_summary(path, json.load(f))
        except json.JSONDecodeError as e:
            skipped.append((path, f"invalid JSON ({e})"))
            continue
        except UnicodeDecodeError as e:
            skipped.append((path, f"not UTF-8 text ({e.reason})"))
            continue
        except OSError as e:
            skipped.append((path, f"cannot be read ({e.strerror or e})"))
            continue
        except SummaryError as e:
            skipped.append((path, str(e)))
            continue
        identity = (cell_key(run.coordinates()), run.seed)
        if identity in seen:
            skipped.append((path, f"duplicate of {seen[identity]} (same settings and seed)"))
            continue
        seen[identity] = path
        runs.append(run)
    if not runs:
        why = f"{len(skipped)} skipped" if skipped else f"no {LAYOUTS} found"
        raise NoResultsError(f"no usable summary in {results_dir} ({why})", skipped)
    return runs, skipped


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; NaN for a single value) and count."""
    arr = np.asarray(values, dtype=float)
    std = float(np.std(arr, ddof=1)) if len(arr) > 1 else math.nan
    return float(np.mean(arr)), std, len(arr)


def cell_key(coordinates: dict) -> tuple:
    """A hashable key of a cell's coordinates."""
    return tuple(sorted(coordinates.items()))


def swept_axes(runs: list[Run], pool_seeds: bool = True) -> tuple[str, ...]:
    """The settings whose values differ between runs (seed only when not pooled): alpha and temperature
    first (always), then the others by name. A setting some runs lack counts as differing."""
    coordinates = [run.coordinates(pool_seeds) for run in runs]
    names = set().union(*coordinates)
    varying = sorted(name for name in names - set(axes.ALWAYS_SHOWN)
                     if len({cell_key({name: c.get(name)}) for c in coordinates}) > 1)
    return axes.ALWAYS_SHOWN + tuple(varying)


def aggregate(runs: list[Run], pool_seeds: bool = True) -> list[Cell]:
    """Group runs by every setting (and the seed unless pooled), sorted by the axes, with mean/std over seeds."""
    names = swept_axes(runs, pool_seeds)
    cells: dict[tuple, Cell] = {}
    for run in runs:
        coordinates = run.coordinates(pool_seeds)
        cells.setdefault(cell_key(coordinates), Cell(coordinates, names)).runs.append(run)
    for cell in cells.values():
        for key in metric_keys(cell.runs):
            cell.stats[key] = mean_std([r.metrics[key] for r in cell.runs if key in r.metrics])
    return sorted(cells.values(), key=lambda c: [axes.sort_key(c.value(name)) for name in names])


def axis_columns(cells: list[Cell]) -> list[str]:
    """The axis columns of the folder's tables: its cells' axes."""
    return list(cells[0].axes) if cells else list(axes.ALWAYS_SHOWN)


def metric_keys(runs: list[Run]) -> list[str]:
    """Every metric key present in any run: known metrics in METRICS order, then the rest (references too) sorted."""
    present = set().union(*(r.metrics for r in runs))
    known = [m.key for m in METRICS if m.key in present]
    return known + sorted(present - set(known))


def interval_methods(cells: list[Cell], keys=None) -> list[str]:
    """The interval methods used by these cells (for `keys` only, when given), in INTERVAL_METHODS order."""
    used = {interval.method for cell in cells for key, interval in cell.intervals.items()
            if keys is None or key in keys}
    return [method for method in INTERVAL_METHODS if method in used]


def write_csv(cells: list[Cell], path: Path) -> None:
    """One row per cell: its axes (alpha, temperature, ...), n, ci_method, then <metric>_{mean,std,ci_low,ci_high}.

    The interval columns are NaN for metrics without an interval (unbounded ones: losses, times).
    """
    keys = metric_keys([r for c in cells for r in c.runs])
    columns = ("mean", "std", "ci_low", "ci_high")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        names = axis_columns(cells)
        writer.writerow(names + ["n", "ci_method"] + [f"{k}_{c}" for k in keys for c in columns])
        for cell in cells:
            methods = "; ".join(INTERVAL_METHODS[m] for m in interval_methods([cell]))
            row = [axes.format_value(cell.value(name)) for name in names] + [cell.n, methods]
            for key in keys:
                mean, std, _ = cell.stats.get(key, (math.nan, math.nan, 0))
                low, high, _ = cell.intervals.get(key, (math.nan, math.nan, ""))
                row += [f"{mean:.10g}", f"{std:.10g}", f"{low:.10g}", f"{high:.10g}"]
            writer.writerow(row)


MARKDOWN_KEYS = (metric_key(ACCURACY, S_VS_GT_SCRIPT1), metric_key(F1, S_VS_GT_SCRIPT1),
                 metric_key(SIMILARITY_AVG, S_VS_GT_SCRIPT1), metric_key(ACCURACY, S_VS_T_SCRIPT1),
                 metric_key(F1, S_VS_T_SCRIPT1), STUDENT_SHARE_OF_TEACHER_ACCURACY, AVG_LOSS,
                 AVG_INFERENCE_TIME_PER_SAMPLE_MS, TRAINING_DURATION_SECONDS)


def format_stat(stat: tuple[float, float, int] | None, fmt: str) -> str:
    """'mean ± std' (just the mean when std is undefined), '–' when absent."""
    if stat is None:
        return "–"
    mean, std, _ = stat
    return f"{mean:{fmt}}" if math.isnan(std) else f"{mean:{fmt}} ± {std:{fmt}}"


def format_cell(cell: Cell, metric: Metric) -> str:
    """'mean ± std [low, high]': the std only with several seeds, the interval only where there is one."""
    text = format_stat(cell.stats.get(metric.key), metric.fmt)
    interval = cell.intervals.get(metric.key)
    return text if interval is None else f"{text} [{interval.low:{metric.fmt}}, {interval.high:{metric.fmt}}]"


def interval_note(cells: list[Cell]) -> str:
    """One sentence: which intervals the tables and figures show, and that unbounded metrics have none."""
    methods = interval_methods(cells)
    made = "; ".join(INTERVAL_METHODS[m] for m in methods) if methods else "none could be made"
    return (f"[low, high]: {CONFIDENCE:.0%} confidence interval of the mean for scores in [0, 1] ({made}). "
            "Losses, times and the share of the teacher's accuracy are unbounded: no interval is given for them.")


def write_markdown(cells: list[Cell], path: Path, sections: list[str] = ()) -> None:
    """A Markdown table of the main metrics per cell (mean ± std over seeds [interval]), then `sections`."""
    present = set(metric_keys([r for c in cells for r in c.runs]))
    metrics = [METRICS_BY_KEY[k] for k in MARKDOWN_KEYS if k in present]
    names = axis_columns(cells)
    header = [axes.axis(name).column for name in names] + ["n"] + [m.label + (f" ({m.unit})" if m.unit else "")
                                                                  for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        row = [axes.format_value(cell.value(name)) for name in names] + [str(cell.n)]
        row += [format_cell(cell, m) for m in metrics]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Mean ± sample standard deviation over seeds; n = runs per cell. " + interval_note(cells))
    lines.append("")
    runs = [r for c in cells for r in c.runs]
    for metric in METRICS:
        for key in metric.reference_keys:
            if key in present:
                stat = mean_std([r.metrics[key] for r in runs if key in r.metrics])
                whose = METRICS_BY_KEY[key].reference_label.capitalize()
                lines.append(f"- {whose}, {metric.label}: {format_stat(stat, metric.fmt)} (n={stat[2]} runs)")
    for section in sections:
        lines += ["", section.rstrip("\n")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def json_lines(stream):
    """(line number, decoded value, None) or (line number, None, error message) for each non-blank line."""
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line), None
        except json.JSONDecodeError as e:
            yield lineno, None, e.msg


def load_epoch_log(path: Path) -> tuple[list[dict], list[str]]:
    """The per-epoch records of one metrics.jsonl's last attempt, and one problem line per unusable line.

    A retried run appends to the log of the attempt that failed, so the epochs restart; only the
    records from the last restart on are returned.
    """
    records, problems = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, record, error in json_lines(f):
            if error is not None:
                problems.append(f"{path}:{lineno}: invalid JSON ({error})")
                continue
            if not isinstance(record, dict) or HISTORY_EPOCH not in record:
                problems.append(f"{path}:{lineno}: not an object with an '{HISTORY_EPOCH}' key")
                continue
            records.append(record)
    epochs = [record[HISTORY_EPOCH] for record in records]
    restarts = [i for i in range(1, len(epochs)) if _earlier_or_same(epochs[i], epochs[i - 1])]
    return records[restarts[-1] if restarts else 0:], problems


def _earlier_or_same(epoch, previous) -> bool:
    """True when `epoch` does not come after `previous` (non-numeric epochs never restart a log)."""
    try:
        return as_number(epoch, HISTORY_EPOCH) <= as_number(previous, HISTORY_EPOCH)
    except SummaryError:
        return False


def epoch_series(records: list[dict], section: str, key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of records[section][key], leaving out epochs where it is not numeric."""
    epochs, values = [], []
    for record in records:
        try:
            epoch = as_number(record[HISTORY_EPOCH], HISTORY_EPOCH)
            value = as_number((record.get(section) or {})[key], f"{section}.{key}")
        except (KeyError, TypeError, SummaryError):
            continue
        epochs.append(epoch)
        values.append(value)
    return epochs, values
