"""This suite's figures of a hyperparameter sweep: one per metric, overview, heatmap, training curves.

Figures are drawn on matplotlib's Agg canvas without pyplot, so no display or global state is used.
"""

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from assertdistill.analysis import axes, results
from assertdistill.analysis.axes import Axis
from assertdistill.analysis.results import Cell, Metric
from assertdistill.core.schema import (
    ACCURACY,
    HISTORY_EVAL,
    HISTORY_TRAIN,
    METRICS_FILENAME,
    S_VS_GT_SCRIPT1,
    TRAIN_LOSS,
    figure_filename,
    metric_key,
)

CURVES = ((HISTORY_EVAL, metric_key(ACCURACY, S_VS_GT_SCRIPT1), "Eval accuracy vs ground truth"),
          (HISTORY_TRAIN, TRAIN_LOSS, "Train loss"))
LINESTYLES = ("-", "--", ":", "-.")


MAX_TICKS = 24  # x tick labels per axis at most; more values get every k-th label
LEGEND_INSIDE_MAX = 6  # legends with more entries go outside the axes
LABEL_MAX = 60  # legends with a longer label go below the axes, shared settings left out, wrapped


def new_figure(figsize) -> Figure:
    """A figure on an Agg canvas."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def other_axes(cells: list[Cell], swept: Axis) -> list[str]:
    """The folder's axes other than the swept one: each line of a figure holds one combination of them."""
    return [name for name in (cells[0].axes if cells else ()) if name != swept.name]


def line_label(cell: Cell, names: list[str]) -> str:
    """'T=2' or 'T=2, student_model_name=dir2': the other axes' values of a line."""
    return ", ".join(f"{axes.axis(name).symbol}={axes.format_value(cell.value(name))}" for name in names)


def lines_of(cells: list[Cell], swept: Axis, key: str | None = None) -> list[tuple[str, list[Cell]]]:
    """[(label, cells along the swept axis)], one per combination of the other axes (cells with `key` only)."""
    names = other_axes(cells, swept)
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        if key is None or key in cell.stats:
            groups.setdefault(tuple(axes.sort_key(cell.value(name)) for name in names), []).append(cell)
    return [(line_label(line[0], names), sorted(line, key=lambda c: axes.sort_key(c.value(swept.name))))
            for _, line in sorted(groups.items())]


def x_positions(cells: list[Cell], swept: Axis) -> dict:
    """Swept value -> x: the value itself for numbers, 0, 1, ... in order for text (a categorical axis)."""
    values = sorted({cell.value(swept.name) for cell in cells}, key=axes.sort_key)
    if axes.categorical(values):
        return {value: float(i) for i, value in enumerate(values)}
    return {value: value for value in values}


def set_x_ticks(ax, cells: list[Cell], swept: Axis, log_scale: bool = True) -> None:
    """Ticks on the swept values (at most MAX_TICKS labels; log2 scale for a doubling temperature grid)."""
    positions = x_positions(cells, swept)
    values, xs = list(positions), list(positions.values())
    if log_scale and not axes.categorical(values) and swept.log2 and min(xs) > 0 and max(xs) / min(xs) >= 4:
        ax.set_xscale("log", base=2)
    step = max(1, math.ceil(len(xs) / MAX_TICKS))
    if axes.categorical(values) or len(xs) <= MAX_TICKS:
        ax.set_xticks(xs[::step], [axes.format_value(v) for v in values[::step]],
                      rotation=45 if axes.categorical(values) and len(xs) > 6 else 0)
        ax.minorticks_off()
    else:
        ax.xaxis.set_major_locator(MaxNLocator(MAX_TICKS))


def _set_x_axis(ax, swept: Axis, cells: list[Cell]) -> None:
    """Label the x axis and put ticks on the swept values."""
    set_x_ticks(ax, cells, swept)
    ax.set_xlabel(swept.label)


def compact_labels(labels: list[str]) -> list[str]:
    """Legend labels: when one is longer than LABEL_MAX, the ', '-separated parts every label shares are left
    out (a setting all lines have alike), and each is wrapped at LABEL_MAX characters."""
    if max(map(len, labels), default=0) <= LABEL_MAX:
        return labels
    parts = [label.split(", ") for label in labels]
    shared = set.intersection(*(set(part) for part in parts)) if len(parts) > 1 else set()
    kept = [", ".join(part for part in label_parts if part not in shared) or label
            for label_parts, label in zip(parts, labels)]
    return [textwrap.fill(label, LABEL_MAX) for label in kept]


def legend_below(fig, handles, labels: list[str], title: str, **style) -> None:
    """A figure legend under the axes, long labels compacted, in two columns past 4 entries; the figure grows by
    the legend's height so the axes keep theirs."""
    labels = compact_labels(labels)
    columns = 2 if len(labels) > 4 else 1
    rows = [sum(label.count("\n") + 1 for label in labels[start::columns]) for start in range(columns)]
    lines = max(rows) + title.count("\n") + 1 + (1 if title else 0)
    fig.set_figwidth(max(fig.get_figwidth(), 5.5 * columns))
    fig.set_figheight(fig.get_figheight() + 0.19 * lines)  # about one 'small' text line per 0.19 in
    fig.legend(handles, labels, loc="outside lower center", title=title, ncol=columns, **style)


def place_legend(fig, ax, title: str = "", **style) -> None:
    """The axes' legend: inside for a few short entries; else outside, on the right, or below for long labels
    (never over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    long_labels = max(map(len, labels), default=0) > LABEL_MAX
    if len(handles) <= LEGEND_INSIDE_MAX and not long_labels:
        ax.legend(title=title, **style)
    elif long_labels:
        legend_below(fig, handles, labels, title, **style)
    else:
        fig.legend(handles, labels, loc="outside right upper", title=title, ncol=math.ceil(len(handles) / 30),
                   **style)


def _n_label(counts) -> str:
    """'n=3', or 'n=2–3' when cells along one line have different numbers of seeds."""
    lo, hi = min(counts), max(counts)
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def error_bars(line: list[Cell], key: str) -> np.ndarray:
    """(2, len(line)) distances below and above each mean: the cell's interval, else the std over seeds."""
    bars = []
    for cell in line:
        mean, std, _ = cell.stats[key]
        interval = cell.intervals.get(key)
        bars.append((mean - interval.low, interval.high - mean) if interval else (std, std))
    return np.nan_to_num(np.asarray(bars, dtype=float).T)


def bar_caption(cells: list[Cell], metric: Metric) -> str:
    """What the error bars of one metric show, for its legend."""
    methods = results.interval_methods(cells, keys={metric.key})
    if methods:
        return f"bars: {results.CONFIDENCE:.0%} CI, " + "; ".join(results.INTERVAL_METHODS[m] for m in methods)
    if any(c.n > 1 for c in cells):
        return "bars: std over seeds (no interval: unbounded metric)"
    return "no interval: unbounded metric"


REFERENCE_STYLES = (dict(color="0.4", linestyle="--"), dict(color="tab:red", linestyle=":"),
                    dict(color="tab:purple", linestyle="-."))  # the teacher's line, then the baselines'


def plot_reference(ax, cells: list[Cell], runs, reference: Metric, style: dict) -> None:
    """A reference prediction's mean over the runs as a horizontal line, its interval (the first cell's) as a band."""
    values = [r.metrics[reference.key] for r in runs if reference.key in r.metrics]
    if not values:
        return
    mean = float(np.mean(values))
    ax.axhline(mean, label=f"{reference.reference_label} (n={len(values)})", **style)
    interval = next((c.intervals[reference.key] for c in cells if reference.key in c.intervals), None)
    if interval is not None:
        ax.axhspan(interval.low, interval.high, color=style["color"], alpha=0.12, linewidth=0)


def plot_metric(ax, cells: list[Cell], metric: Metric, swept: Axis, runs) -> None:
    """Mean and error bars (bar_caption) of one metric vs the swept value, one line per other axes' values."""
    positions = x_positions(cells, swept)
    for label, line in lines_of(cells, swept, metric.key):
        xs = [positions[c.value(swept.name)] for c in line]
        means, _, counts = zip(*(c.stats[metric.key] for c in line))
        ax.errorbar(xs, means, yerr=error_bars(line, metric.key), marker="o", capsize=3,
                    label=f"{label} ({_n_label(counts)})" if label else _n_label(counts))
    for key, style in zip(metric.reference_keys, REFERENCE_STYLES):
        plot_reference(ax, cells, runs, results.METRICS_BY_KEY[key], style)
    _set_x_axis(ax, swept, cells)
    ax.set_title(metric.label)
    ax.set_ylabel(metric.unit or "value")
    ax.grid(alpha=0.3)


def plotted_metrics(runs) -> list[Metric]:
    """The known metrics present in at least one run, in METRICS order."""
    present = set(results.metric_keys(runs))
    return [m for m in results.METRICS if m.key in present]


def metric_figure(cells, runs, metric: Metric, swept: Axis) -> Figure:
    """The figure of one metric against the swept setting."""
    fig = new_figure((6, 4) if len(lines_of(cells, swept)) <= LEGEND_INSIDE_MAX else (9, 4.5))
    ax = fig.add_subplot()
    plot_metric(ax, cells, metric, swept, runs)
    place_legend(fig, ax, textwrap.fill(bar_caption(cells, metric), 50), fontsize="small", title_fontsize="x-small")
    return fig


def save_metric_figures(cells, runs, swept: Axis, out_dir: Path, fmt: str) -> list[Path]:
    """One figure per metric: `<metric>.<fmt>`."""
    paths = []
    for metric in plotted_metrics(runs):
        paths.append(out_dir / figure_filename(metric.key, fmt))
        metric_figure(cells, runs, metric, swept).savefig(paths[-1])
    return paths


def save_overview(cells, runs, swept: Axis, path: Path) -> None:
    """All metrics as panels of one figure, with one shared legend below."""
    metrics = plotted_metrics(runs)
    ncols = 4
    nrows = math.ceil(len(metrics) / ncols)
    fig = new_figure((4.2 * ncols, 3.2 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    legend = {}
    for ax, metric in zip(axes, metrics):
        plot_metric(ax, cells, metric, swept, runs)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            reference = any(label.startswith(m.reference_label + " (n=") for m in results.REFERENCE_METRICS)
            legend.setdefault(label.split(" (n=")[0] if reference else label, handle)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=min(len(legend), 6),
               fontsize="small" if len(legend) > 12 else None)
    methods = "; ".join(results.INTERVAL_METHODS[m] for m in results.interval_methods(cells)) or "none"
    unbounded = "std over seeds for" if any(c.n > 1 for c in cells) else "none for"
    title = (f"Distillation metrics vs {swept.label}: mean; bars: {results.CONFIDENCE:.0%} CI for scores in "
             f"[0, 1] ({methods}), {unbounded} unbounded metrics (no interval)")
    fig.suptitle(textwrap.fill(title, 30 * ncols))  # about 30 characters of the title's font per panel
    fig.savefig(path)


def grid_axis(cells, swept: Axis) -> Axis | None:
    """The one other axis with >= 2 values when the swept one has >= 2 too (a heatmap grid); else None."""
    varying = [name for name in other_axes(cells, swept) if len({axes.sort_key(c.value(name)) for c in cells}) > 1]
    if len(varying) != 1 or len(x_positions(cells, swept)) < 2:
        return None
    return axes.axis(varying[0])


def save_heatmap(cells, metric_key: str, swept: Axis, path: Path) -> None:
    """Mean of one metric over the (swept x other) grid; missing cells left blank."""
    other = grid_axis(cells, swept)
    xs = sorted({c.value(swept.name) for c in cells}, key=axes.sort_key)
    ys = sorted({c.value(other.name) for c in cells}, key=axes.sort_key)
    grid = np.full((len(ys), len(xs)), np.nan)
    text = {}
    for cell in cells:
        if metric_key in cell.stats:
            i, j = ys.index(cell.value(other.name)), xs.index(cell.value(swept.name))
            grid[i, j] = cell.stats[metric_key][0]
            text[i, j] = results.format_stat(cell.stats[metric_key], ".3g").replace(" ± ", "\n±")
    fig = new_figure((min(1.2 * len(xs), 24) + 2.5, min(0.9 * len(ys), 18) + 1.8))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis")
    lo, hi = np.nanmin(grid), np.nanmax(grid)
    if len(xs) * len(ys) <= 150:  # the numbers stay legible
        for (i, j), label in text.items():
            light = hi == lo or (grid[i, j] - lo) / (hi - lo) > 0.5
            ax.text(j, i, label, ha="center", va="center", fontsize="small", color="black" if light else "white")
    x_step, y_step = max(1, math.ceil(len(xs) / MAX_TICKS)), max(1, math.ceil(len(ys) / MAX_TICKS))
    ax.set_xticks(range(0, len(xs), x_step), [axes.format_value(x) for x in xs[::x_step]])
    ax.set_yticks(range(0, len(ys), y_step), [axes.format_value(y) for y in ys[::y_step]])
    ax.set_xlabel(swept.label)
    ax.set_ylabel(other.label)
    metric = results.METRICS_BY_KEY.get(metric_key)
    ax.set_title(f"{metric.label if metric else metric_key} (mean over seeds)")
    fig.colorbar(image, ax=ax)
    fig.savefig(path)


def load_curves(runs, err) -> dict[Path, list[dict]]:
    """run path -> per-epoch records from its metrics.jsonl; problems reported to `err`."""
    curves = {}
    for run in runs:
        log = run.path.parent / METRICS_FILENAME
        if not log.is_file():
            if log.exists():
                print(f"skip {log}: not a regular file (a FIFO, device or folder)", file=err)
            continue
        try:
            records, problems = results.load_epoch_log(log)
        except (OSError, UnicodeDecodeError) as e:
            print(f"skip {log}: {e}", file=err)
            continue
        for problem in problems:
            print(f"skip {problem}", file=err)
        if records:
            curves[run.path] = records
    return curves


def _colours(n: int) -> list:
    """n distinguishable colours: tab10 when it has enough, else evenly spaced viridis."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def save_training_curves(cells, curves, swept: Axis, path: Path) -> bool:
    """Eval accuracy and train loss per epoch, one line per run; False if no run has either series."""
    swept_values = list(x_positions(cells, swept))
    groups = lines_of(cells, swept)
    colour = dict(zip(swept_values, _colours(len(swept_values))))  # colour: swept value
    style = {label: LINESTYLES[i % len(LINESTYLES)] for i, (label, _) in enumerate(groups)}  # dash: the others
    fig = new_figure((12, 4.5))
    panels = fig.subplots(1, len(CURVES))
    n_runs = 0
    for label, line in groups:
        for cell in line:
            for run in cell.runs:
                drawn = False
                for ax, (section, key, _) in zip(panels, CURVES):
                    epochs, values = results.epoch_series(curves.get(run.path, []), section, key)
                    if epochs:
                        ax.plot(epochs, values, marker=".", alpha=0.8, color=colour[cell.value(swept.name)],
                                linestyle=style[label])
                        drawn = True
                n_runs += drawn
    if not n_runs:
        return False
    for ax, (_, _, title) in zip(panels, CURVES):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    step = max(1, math.ceil(len(swept_values) / MAX_TICKS))
    handles = [Line2D([], [], color=colour[v], marker=".", label=f"{swept.symbol}={axes.format_value(v)}")
               for v in swept_values[::step]]
    if len(groups) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=style[label], label=label) for label, _ in groups]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small", ncol=math.ceil(len(handles) / 30))
    fig.suptitle(f"Training curves, one line per run ({n_runs} runs with {METRICS_FILENAME})")
    fig.savefig(path)
    return True
