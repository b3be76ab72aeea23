"""This suite's figures of a hyperparameter sweep: one per metric, overview, heatmap, training curves.

Figures are drawn on matplotlib's Agg canvas without pyplot, so no display or global state is used.
"""

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from assertdistill import results
from assertdistill.results import Cell, Metric
from assertdistill.schema import (ACCURACY, HISTORY_EVAL, HISTORY_TRAIN, METRICS_FILENAME, S_VS_GT_SCRIPT1, TRAIN_LOSS,
                                  figure_filename, metric_key)

CURVES = ((HISTORY_EVAL, metric_key(ACCURACY, S_VS_GT_SCRIPT1), "Eval accuracy vs ground truth"),
          (HISTORY_TRAIN, TRAIN_LOSS, "Train loss"))
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Axis:
    """A hyperparameter as an axis: its name in results.Run, how to label it, how to scale it."""

    name: str  # also the thesis figures' prefix: <name>_vs_loss.png
    symbol: str
    label: str
    log2: bool  # temperatures are usually a doubling grid
    thesis_label: str  # the thesis figures' axis label and title wording
    thesis_loss_colour: str


AXES = {
    "alpha": Axis("alpha", "α", "α (weight of the KL loss)", log2=False,
                  thesis_label="Alpha (KL Loss Weight)", thesis_loss_colour="green"),
    "temperature": Axis("temperature", "T", "temperature T", log2=True,
                        thesis_label="Temperature", thesis_loss_colour="magenta"),
}


def other_axis(swept: Axis) -> Axis:
    """The hyperparameter held fixed per line when `swept` is on the x axis."""
    return AXES["temperature" if swept.name == "alpha" else "alpha"]


def new_figure(figsize) -> Figure:
    """A figure on an Agg canvas."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _set_x_axis(ax, swept: Axis, xs) -> None:
    """Label the x axis and put ticks on the swept values (log2 scale for temperature)."""
    if swept.log2 and min(xs) > 0 and max(xs) / min(xs) >= 4:
        ax.set_xscale("log", base=2)
    if len(xs) <= 12:
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel(swept.label)


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


def plot_metric(ax, cells: list[Cell], metric: Metric, swept: Axis, runs) -> None:
    """Mean and error bars (bar_caption) of one metric vs the swept value, one line per other-parameter value."""
    other = other_axis(swept)
    for other_value in sorted({c.value(other.name) for c in cells}):
        line = sorted((c for c in cells if c.value(other.name) == other_value and metric.key in c.stats),
                      key=lambda c: c.value(swept.name))
        if not line:
            continue
        xs = [c.value(swept.name) for c in line]
        means, _, counts = zip(*(c.stats[metric.key] for c in line))
        ax.errorbar(xs, means, yerr=error_bars(line, metric.key), marker="o", capsize=3,
                    label=f"{other.symbol}={other_value:g} ({_n_label(counts)})")
    reference = [r.metrics[metric.reference_key] for r in runs if metric.reference_key in r.metrics]
    if reference:
        ax.axhline(float(np.mean(reference)), color="0.4", linestyle="--",
                   label=f"teacher (n={len(reference)})")
    _set_x_axis(ax, swept, sorted({c.value(swept.name) for c in cells}))
    ax.set_title(metric.label)
    ax.set_ylabel(metric.unit or "value")
    ax.grid(alpha=0.3)


def plotted_metrics(runs) -> list[Metric]:
    """The known metrics present in at least one run, in METRICS order."""
    present = set(results.metric_keys(runs))
    return [m for m in results.METRICS if m.key in present]


def save_metric_figures(cells, runs, swept: Axis, out_dir: Path, fmt: str) -> list[Path]:
    """One figure per metric: `<metric>.<fmt>`."""
    paths = []
    for metric in plotted_metrics(runs):
        fig = new_figure((6, 4))
        ax = fig.add_subplot()
        plot_metric(ax, cells, metric, swept, runs)
        ax.legend(fontsize="small", title=textwrap.fill(bar_caption(cells, metric), 50), title_fontsize="x-small")
        paths.append(out_dir / figure_filename(metric.key, fmt))
        fig.savefig(paths[-1])
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
            legend.setdefault(label.split(" (n=")[0] if label.startswith("teacher") else label, handle)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=min(len(legend), 6))
    methods = "; ".join(results.INTERVAL_METHODS[m] for m in results.interval_methods(cells)) or "none"
    unbounded = "std over seeds for" if any(c.n > 1 for c in cells) else "none for"
    fig.suptitle(f"Distillation metrics vs {swept.label}: mean; bars: {results.CONFIDENCE:.0%} CI for scores in "
                 f"[0, 1] ({methods}), {unbounded} unbounded metrics (no interval)")
    fig.savefig(path)


def is_grid(cells) -> bool:
    """True when the runs cover >= 2 distinct alphas and >= 2 distinct temperatures."""
    return len({c.alpha for c in cells}) >= 2 and len({c.temperature for c in cells}) >= 2


def save_heatmap(cells, metric_key: str, swept: Axis, path: Path) -> None:
    """Mean of one metric over the (swept x other) grid; missing cells left blank."""
    other = other_axis(swept)
    xs = sorted({c.value(swept.name) for c in cells})
    ys = sorted({c.value(other.name) for c in cells})
    grid = np.full((len(ys), len(xs)), np.nan)
    text = {}
    for cell in cells:
        if metric_key in cell.stats:
            i, j = ys.index(cell.value(other.name)), xs.index(cell.value(swept.name))
            grid[i, j] = cell.stats[metric_key][0]
            text[i, j] = results.format_stat(cell.stats[metric_key], ".3g").replace(" ± ", "\n±")
    fig = new_figure((1.2 * len(xs) + 2.5, 0.9 * len(ys) + 1.8))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis")
    lo, hi = np.nanmin(grid), np.nanmax(grid)
    for (i, j), label in text.items():
        light = hi == lo or (grid[i, j] - lo) / (hi - lo) > 0.5
        ax.text(j, i, label, ha="center", va="center", fontsize="small", color="black" if light else "white")
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
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
    other = other_axis(swept)
    swept_values = sorted({c.value(swept.name) for c in cells})
    other_values = sorted({c.value(other.name) for c in cells})
    colour = dict(zip(swept_values, _colours(len(swept_values))))  # colour: swept value
    style = {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(other_values)}  # dash: the other one
    fig = new_figure((12, 4.5))
    axes = fig.subplots(1, len(CURVES))
    n_runs = 0
    for cell in cells:
        for run in cell.runs:
            drawn = False
            for ax, (section, key, _) in zip(axes, CURVES):
                epochs, values = results.epoch_series(curves.get(run.path, []), section, key)
                if epochs:
                    ax.plot(epochs, values, marker=".", alpha=0.8, color=colour[cell.value(swept.name)],
                            linestyle=style[cell.value(other.name)])
                    drawn = True
            n_runs += drawn
    if not n_runs:
        return False
    for ax, (_, _, title) in zip(axes, CURVES):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colour[v], marker=".", label=f"{swept.symbol}={v:g}") for v in swept_values]
    if len(other_values) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=style[v], label=f"{other.symbol}={v:g}")
                    for v in other_values]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    fig.suptitle(f"Training curves, one line per run ({n_runs} runs with {METRICS_FILENAME})")
    fig.savefig(path)
    return True
