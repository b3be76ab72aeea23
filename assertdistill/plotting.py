"""Figures and tables of a hyperparameter sweep; shared by alpha_graphs.py and temperature_graphs.py.

Figures are drawn on matplotlib's Agg canvas without pyplot, so no display or global state is used.
"""

import argparse
import math
import sys
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

FORMATS = ("png", "pdf", "svg")
DEFAULT_HEATMAP_METRIC = "avg_accuracy_s_vs_gt_script1"
CURVES = (("eval", "avg_accuracy_s_vs_gt_script1", "Eval accuracy vs ground truth"),
          ("train", "loss", "Train loss"))
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
# The thesis's combined figure: (metric root, label, colour); vs ground truth solid, vs teacher dashed.
THESIS_COMBINED = (("accuracy", "Accuracy", "blue"), ("f1", "F1-Score", "orange"),
                   ("precision", "Precision", "green"), ("recall", "Recall", "red"))
THESIS_VS = (("gt", "GT", "o", "-"), ("t", "Teacher", "x", "--"))  # (key part, label, marker, linestyle)
DEFAULT_DIRS = {"alpha": ("results_alpha", "graphs_alpha"), "temperature": ("results_temp", "graphs_temp")}


def other_axis(swept: Axis) -> Axis:
    """The hyperparameter held fixed per line when `swept` is on the x axis."""
    return AXES["temperature" if swept.name == "alpha" else "alpha"]


def build_arg_parser(swept_name: str, description: str) -> argparse.ArgumentParser:
    """The command line shared by the graph scripts, with defaults for the swept parameter."""
    results_dir, output_dir = DEFAULT_DIRS[swept_name]
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--results_dir", type=Path, default=Path(results_dir),
                        help=f"directory holding the runs' summaries: flat *.json files directly in it (the thesis's "
                             f"layout) and/or */{results.SUMMARY_NAME} below it (sweep.sh's); default: {results_dir}")
    parser.add_argument("--output_dir", type=Path, default=Path(output_dir),
                        help=f"where figures, summary.csv and summary.md go; created if missing (default: {output_dir})")
    parser.add_argument("--format", choices=FORMATS, default="png", help="figure file format (default: png)")
    parser.add_argument("--heatmap_metric", default=DEFAULT_HEATMAP_METRIC,
                        help="final_evaluation_metrics key shown in the alpha x T heatmap, drawn when the runs "
                             f"form a grid of >= 2 values each (default: {DEFAULT_HEATMAP_METRIC})")
    return parser


def _new_figure(figsize) -> Figure:
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


def plot_metric(ax, cells: list[Cell], metric: Metric, swept: Axis, runs) -> None:
    """Mean ± std over seeds of one metric vs the swept value, one line per other-parameter value."""
    other = other_axis(swept)
    for other_value in sorted({c.value(other.name) for c in cells}):
        line = sorted((c for c in cells if c.value(other.name) == other_value and metric.key in c.stats),
                      key=lambda c: c.value(swept.name))
        if not line:
            continue
        xs = [c.value(swept.name) for c in line]
        means, stds, counts = zip(*(c.stats[metric.key] for c in line))
        ax.errorbar(xs, means, yerr=np.nan_to_num(stds), marker="o", capsize=3,
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
        fig = _new_figure((6, 4))
        ax = fig.add_subplot()
        plot_metric(ax, cells, metric, swept, runs)
        ax.legend(fontsize="small")
        paths.append(out_dir / f"{metric.key}.{fmt}")
        fig.savefig(paths[-1])
    return paths


def save_overview(cells, runs, swept: Axis, path: Path) -> None:
    """All metrics as panels of one figure, with one shared legend below."""
    metrics = plotted_metrics(runs)
    ncols = 4
    nrows = math.ceil(len(metrics) / ncols)
    fig = _new_figure((4.2 * ncols, 3.2 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    legend = {}
    for ax, metric in zip(axes, metrics):
        plot_metric(ax, cells, metric, swept, runs)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label.split(" (n=")[0] if label.startswith("teacher") else label, handle)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=min(len(legend), 6))
    fig.suptitle(f"Distillation metrics vs {swept.label} (mean ± std over seeds)")
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
    fig = _new_figure((1.2 * len(xs) + 2.5, 0.9 * len(ys) + 1.8))
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
        log = run.path.parent / results.EPOCH_LOG_NAME
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
    fig = _new_figure((12, 4.5))
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
    fig.suptitle(f"Training curves, one line per run ({n_runs} runs with {results.EPOCH_LOG_NAME})")
    fig.savefig(path)
    return True


def _thesis_series(cells, swept: Axis, key: str):
    """[(label suffix, xs, means)] of one metric: one series per value of the other parameter."""
    other = other_axis(swept)
    other_values = sorted({c.value(other.name) for c in cells})
    series = []
    for other_value in other_values:
        line = sorted((c for c in cells if c.value(other.name) == other_value and key in c.stats),
                      key=lambda c: c.value(swept.name))
        if line:
            suffix = f", {other.symbol}={other_value:g}" if len(other_values) > 1 else ""
            series.append((suffix, [c.value(swept.name) for c in line], [c.stats[key][0] for c in line]))
    return series


def _thesis_axes(fig, swept: Axis, cells, title: str, ylabel: str):
    """One axes with the thesis's title, labels, ticks on every swept value and dashed grid."""
    ax = fig.add_subplot()
    ax.set_title(f"Effect of {swept.thesis_label} on {title}")
    ax.set_xlabel(swept.thesis_label)
    ax.set_ylabel(ylabel)
    ax.set_xticks(sorted({c.value(swept.name) for c in cells}))
    ax.grid(True, linestyle="--", alpha=0.7)
    return ax


def save_thesis_figures(cells, swept: Axis, out_dir: Path, fmt: str) -> list[Path]:
    """The thesis's four figures, <swept>_vs_{combined_metrics,similarity,loss,inference_time}.<fmt>.

    Same series as the thesis's scripts (means over seeds when a cell has several); absent metrics
    are left out of a figure, and a figure with nothing to draw is not written.
    """
    paths = []

    def save(fig, ax, name, legend_outside=False):
        if not ax.lines:
            return
        if legend_outside:
            ax.legend(bbox_to_anchor=(1.05, 1), loc="upper left")
        else:
            ax.legend()
        paths.append(out_dir / f"{swept.name}_vs_{name}.{fmt}")
        fig.savefig(paths[-1])

    fig = _new_figure((12, 8))
    ax = _thesis_axes(fig, swept, cells, "Key Assertion Metrics", "Metric Value")
    drawn = []
    for root, label, colour in THESIS_COMBINED:
        for vs, vs_label, marker, linestyle in THESIS_VS:
            for suffix, xs, means in _thesis_series(cells, swept, f"avg_{root}_s_vs_{vs}_script1"):
                ax.plot(xs, means, marker=marker, linestyle=linestyle, color=colour,
                        label=f"{label} ({vs_label}{suffix})")
                drawn += means
    if drawn:  # the thesis's y range: the data plus 10% padding, inside [0, 1]
        padding = (max(drawn) - min(drawn)) * 0.10 or 0.05
        ax.set_ylim(max(0.0, min(drawn) - padding), min(1.0, max(drawn) + padding))
    save(fig, ax, "combined_metrics", legend_outside=True)

    fig = _new_figure((10, 6))
    ax = _thesis_axes(fig, swept, cells, "Average Assertion Similarity", "Average Similarity")
    for vs, label, marker, linestyle in (("gt", "Student vs. Ground Truth (GT)", "o", "-"),
                                         ("t", "Student vs. Teacher", "x", "--")):
        for suffix, xs, means in _thesis_series(cells, swept, f"avg_similarity_avg_s_vs_{vs}_script1"):
            ax.plot(xs, means, marker=marker, linestyle=linestyle, label=label + suffix)
    save(fig, ax, "similarity")

    for key, name, title, ylabel, label, colour in (
            ("avg_loss", "loss", "Average Student Loss", "Average Loss", "Overall Student Loss",
             swept.thesis_loss_colour),
            ("avg_inference_time_per_sample_ms", "inference_time", "Average Inference Time",
             "Avg. Inference Time (ms/sample)", "Inference Time", "purple")):
        fig = _new_figure((10, 6))
        ax = _thesis_axes(fig, swept, cells, title, ylabel)
        for suffix, xs, means in _thesis_series(cells, swept, key):
            ax.plot(xs, means, marker="s", linestyle="-.", color=colour if not suffix else None,
                    label=label + suffix)
        save(fig, ax, name)
    return paths


def run_graphs(args: argparse.Namespace, swept_name: str, out=None, err=None) -> int:
    """Load the sweep under args.results_dir and write figures and tables; return the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    swept = AXES[swept_name]
    try:
        runs, skipped = results.load_runs(args.results_dir)
    except results.NoResultsError as e:
        for path, reason in e.skipped:
            print(f"skip {path}: {reason}", file=err)
        print(f"error: {e}", file=err)
        return 2
    for path, reason in skipped:
        print(f"skip {path}: {reason}", file=err)
    available = results.metric_keys(runs)
    if args.heatmap_metric not in available:
        print(f"error: --heatmap_metric {args.heatmap_metric} is in no summary; available: {', '.join(available)}",
              file=err)
        return 2
    cells = results.aggregate(runs)
    print(f"loaded {len(runs)} runs in {len(cells)} (alpha, T) cells from {args.results_dir}"
          f" ({len(skipped)} skipped)", file=out)
    out_dir, fmt = args.output_dir, args.format
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        figures = save_metric_figures(cells, runs, swept, out_dir, fmt)
        print(f"wrote {len(figures)} metric figures to {out_dir}/: {', '.join(p.name for p in figures)}", file=out)
        thesis = save_thesis_figures(cells, swept, out_dir, fmt)
        print(f"wrote the thesis's {len(thesis)} figures: {', '.join(p.name for p in thesis)}", file=out)
        save_overview(cells, runs, swept, out_dir / f"overview.{fmt}")
        print(f"wrote {out_dir / f'overview.{fmt}'} (all metrics as panels)", file=out)
        if is_grid(cells):
            path = out_dir / f"heatmap_{args.heatmap_metric}.{fmt}"
            save_heatmap(cells, args.heatmap_metric, swept, path)
            print(f"wrote {path} (alpha x T grid)", file=out)
        else:
            print("heatmap: skipped (needs >= 2 alphas and >= 2 temperatures)", file=out)
        curves = load_curves(runs, err)
        path = out_dir / f"training_curves.{fmt}"
        if curves and save_training_curves(cells, curves, swept, path):
            print(f"wrote {path} ({len(curves)} runs with {results.EPOCH_LOG_NAME})", file=out)
        else:
            print(f"training curves: skipped (no run has a usable {results.EPOCH_LOG_NAME})", file=out)
        results.write_csv(cells, out_dir / "summary.csv")
        results.write_markdown(cells, out_dir / "summary.md")
        print(f"wrote {out_dir / 'summary.csv'} and {out_dir / 'summary.md'} (mean and std over seeds per cell)",
              file=out)
    except OSError as e:
        print(f"error: cannot write to {out_dir}: {e}", file=err)
        return 1
    return 0
