"""The thesis's four figures of a sweep, under the thesis's names: <swept>_vs_combined_metrics,
<swept>_vs_similarity, <swept>_vs_loss and <swept>_vs_inference_time.

The same series, titles, labels, colours and markers as the thesis's graph scripts; added are error
bars (the cells' intervals, see plotting.bar_caption) and one series per value of the other
combination of the other axes when a sweep holds several. Like the thesis's, the x axis is linear
(evenly spaced values for a setting that is text, e.g. a student model).
"""

import textwrap
from pathlib import Path

from assertdistill.analysis import results
from assertdistill.analysis.axes import Axis
from assertdistill.analysis.plotting import (
    LABEL_MAX,
    LEGEND_INSIDE_MAX,
    bar_caption,
    error_bars,
    legend_below,
    lines_of,
    new_figure,
    set_x_ticks,
    x_positions,
)
from assertdistill.core.schema import (
    ACCURACY,
    AVG_INFERENCE_TIME_PER_SAMPLE_MS,
    AVG_LOSS,
    F1,
    PRECISION,
    RECALL,
    S_VS_GT_SCRIPT1,
    S_VS_T_SCRIPT1,
    SIMILARITY_AVG,
    THESIS_FIGURES,
    metric_key,
    thesis_figure_filename,
)

# The combined figure: (metric root, label, colour); vs ground truth solid, vs teacher dashed.
COMBINED = ((ACCURACY, "Accuracy", "blue"), (F1, "F1-Score", "orange"),
            (PRECISION, "Precision", "green"), (RECALL, "Recall", "red"))
# (key suffix, label, marker, linestyle)
VERSUS = ((S_VS_GT_SCRIPT1, "GT", "o", "-"), (S_VS_T_SCRIPT1, "Teacher", "x", "--"))
SIMILARITY = ((S_VS_GT_SCRIPT1, "Student vs. Ground Truth (GT)", "o", "-"),
              (S_VS_T_SCRIPT1, "Student vs. Teacher", "x", "--"))
# The single-line figures: (metric key, file name, title, y label, series label, colour; None: the axis's)
COMBINED_METRICS, SIMILARITY_FIGURE, LOSS_FIGURE, INFERENCE_TIME_FIGURE = THESIS_FIGURES
SINGLE = ((AVG_LOSS, LOSS_FIGURE, "Average Student Loss", "Average Loss", "Overall Student Loss", None),
          (AVG_INFERENCE_TIME_PER_SAMPLE_MS, INFERENCE_TIME_FIGURE, "Average Inference Time",
           "Avg. Inference Time (ms/sample)", "Inference Time", "purple"))


def _series(cells, swept: Axis, key: str):
    """[(label suffix, cells along the swept axis)] of one metric: one per combination of the other axes."""
    series = lines_of(cells, swept, key)
    several = len(lines_of(cells, swept)) > 1
    return [((f", {label}" if several else ""), line) for label, line in series]


def _draw(ax, swept: Axis, line, key: str, positions: dict, shift: float = 0.0, **style) -> list[float]:
    """Means and error bars of one series, its bars moved `shift` along x; returns the bar ends."""
    xs = [positions[c.value(swept.name)] for c in line]
    means = [c.stats[key][0] for c in line]
    bars = error_bars(line, key)
    ax.plot(xs, means, **style)
    if bars.any():  # beside the point, so that the bars of neighbouring series stay apart
        ax.errorbar([x + shift for x in xs], means, yerr=bars, fmt="none", capsize=2, elinewidth=0.8,
                    alpha=0.6, color=ax.lines[-1].get_color())
    return [m - b for m, b in zip(means, bars[0])] + [m + b for m, b in zip(means, bars[1])]


def _shifts(cells, swept: Axis, count: int) -> list[float]:
    """x offsets for the bars of `count` series: spread over a third of the closest swept values' gap."""
    xs = sorted(x_positions(cells, swept).values())
    gap = min((b - a for a, b in zip(xs, xs[1:])), default=1.0)
    step = gap / 3 / max(count - 1, 1)
    return [(i - (count - 1) / 2) * step for i in range(count)]


def _axes(fig, swept: Axis, cells, title: str, ylabel: str):
    """One axes with the thesis's title, labels, ticks on every swept value and dashed grid."""
    ax = fig.add_subplot()
    ax.set_title(f"Effect of {swept.thesis_label} on {title}")
    ax.set_xlabel(swept.thesis_label)
    ax.set_ylabel(ylabel)
    set_x_ticks(ax, cells, swept, log_scale=False)  # linear, as the thesis's
    ax.grid(True, linestyle="--", alpha=0.7)
    return ax


def _caption(cells, keys) -> str:
    """The bar captions of the metrics drawn in one figure, each once."""
    captions = [bar_caption(cells, results.METRICS_BY_KEY[key]) for key in keys]
    return "; ".join(dict.fromkeys(captions))


def save_thesis_figures(cells, swept: Axis, out_dir: Path, fmt: str) -> list[Path]:
    """Write the four figures (those with anything to draw) as <swept>_vs_<name>.<fmt>; return their paths."""
    paths, positions = [], x_positions(cells, swept)

    def save(fig, ax, name, keys, **legend):
        if ax.lines:
            title = textwrap.fill(_caption(cells, keys), 45)
            handles, labels = ax.get_legend_handles_labels()
            if max(map(len, labels), default=0) > LABEL_MAX:  # long labels: below the axes, not beside them
                legend_below(fig, handles, labels, title, title_fontsize="small", fontsize="small")
            else:
                if len(handles) > LEGEND_INSIDE_MAX:
                    legend = {"bbox_to_anchor": (1.02, 1), "loc": "upper left", "fontsize": "small"}
                ax.legend(title=title, title_fontsize="small", **legend)
            paths.append(out_dir / thesis_figure_filename(swept.name, name, fmt))
            fig.savefig(paths[-1])

    fig = new_figure((12, 8))
    ax = _axes(fig, swept, cells, "Key Assertion Metrics", "Metric Value")
    ends, keys = [], []
    drawn = [(root, label, colour, versus, suffix, line) for root, label, colour in COMBINED for versus in VERSUS
             for suffix, line in _series(cells, swept, metric_key(root, versus[0]))]
    for shift, (root, label, colour, versus, suffix, line) in zip(_shifts(cells, swept, len(drawn)), drawn):
        versus_key, versus_label, marker, linestyle = versus
        keys.append(metric_key(root, versus_key))
        ends += _draw(ax, swept, line, keys[-1], positions, shift, marker=marker, linestyle=linestyle, color=colour,
                      label=f"{label} ({versus_label}{suffix})")
    if ends:  # the thesis's y range: the data plus 10% padding, inside [0, 1]
        padding = (max(ends) - min(ends)) * 0.10 or 0.05
        ax.set_ylim(max(0.0, min(ends) - padding), min(1.0, max(ends) + padding))
    save(fig, ax, COMBINED_METRICS, keys, bbox_to_anchor=(1.05, 1), loc="upper left")

    fig = new_figure((10, 6))
    ax = _axes(fig, swept, cells, "Average Assertion Similarity", "Average Similarity")
    keys = [metric_key(SIMILARITY_AVG, versus) for versus, *_ in SIMILARITY]
    drawn = [(key, style, suffix, line) for key, style in zip(keys, SIMILARITY)
             for suffix, line in _series(cells, swept, key)]
    for shift, (key, (_, label, marker, linestyle), suffix, line) in zip(_shifts(cells, swept, len(drawn)), drawn):
        _draw(ax, swept, line, key, positions, shift, marker=marker, linestyle=linestyle, label=label + suffix)
    save(fig, ax, SIMILARITY_FIGURE, keys)

    for key, name, title, ylabel, label, colour in SINGLE:
        fig = new_figure((10, 6))
        ax = _axes(fig, swept, cells, title, ylabel)
        series = _series(cells, swept, key)
        for shift, (suffix, line) in zip(_shifts(cells, swept, len(series)), series):
            _draw(ax, swept, line, key, positions, shift, marker="s", linestyle="-.", label=label + suffix,
                  color=(colour or swept.thesis_loss_colour) if len(series) == 1 else None)
        save(fig, ax, name, [key])
    return paths
