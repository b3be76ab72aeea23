"""The figure of an execution_summary.json: exact match, compile rate, pass rate, mutation score per candidate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..core.schema import (
    SUM_CANDIDATES,
    SUM_COMPILE_RATE,
    SUM_COUNT,
    SUM_EXACT_MATCH,
    SUM_EXECUTABLE,
    SUM_INTERVAL,
    SUM_MUTATION_SCORE,
    SUM_PASS_RATE,
    SUM_RECORDS,
    SUM_TRIED,
    SUM_VALUE,
)

BARS = ((SUM_EXACT_MATCH, "exact match"), (SUM_COMPILE_RATE, "compiles"), (SUM_PASS_RATE, "passes"),
        (SUM_MUTATION_SCORE, "mutation score\n(of passing)"))
LABELS = {"ground_truth": "ground truth", "teacher_prediction": "teacher", "student_prediction": "student",
          "retrieval_prediction": "retrieval"}


def save_execution_figure(summary: dict, path: Path, title: str = "") -> None:
    """Grouped bars (one group per metric, one bar per candidate) with 95% intervals as error bars."""
    candidates = list(summary[SUM_CANDIDATES])
    bars = [(key, label) for key, label in BARS
            if any(summary[SUM_CANDIDATES][c][key][SUM_VALUE] is not None for c in candidates)]  # e.g. no mutants
    figure = Figure(figsize=(8, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    width = 0.8 / max(1, len(candidates))
    for offset, candidate in enumerate(candidates):
        entries = [summary[SUM_CANDIDATES][candidate][key] for key, _ in bars]
        values = np.array([e[SUM_VALUE] if e[SUM_VALUE] is not None else np.nan for e in entries])
        low = np.array([e[SUM_INTERVAL][0] if e[SUM_INTERVAL] else np.nan for e in entries])
        high = np.array([e[SUM_INTERVAL][1] if e[SUM_INTERVAL] else np.nan for e in entries])
        xs = np.arange(len(bars)) + (offset - (len(candidates) - 1) / 2) * width
        ax.bar(xs, np.nan_to_num(values), width, label=LABELS.get(candidate, candidate),
               yerr=np.nan_to_num(np.vstack([values - low, high - values])), capsize=3)
        for x, value, top, entry in zip(xs, values, high, entries):
            if not np.isnan(value):
                ax.annotate(f"{value:.2f}\nn={entry[SUM_COUNT]}", (x, top), textcoords="offset points",
                            xytext=(0, 3), ha="center", fontsize=6)
    ax.set_xticks(np.arange(len(bars)), [label for _, label in bars])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("share (95% interval)")
    records = summary[SUM_RECORDS]
    ax.set_title(title or f"{records[SUM_EXECUTABLE]} of {records[SUM_TRIED]} records executable", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    figure.savefig(path, dpi=130)
