"""The command line of alpha_graphs.py and temperature_graphs.py: load a sweep, write figures and tables."""

import argparse
import sys
from pathlib import Path

from assertdistill import comparisons, intervals, plotting, results
from assertdistill.schema import (ACCURACY, COMPARISONS_FILENAME, FINAL_EVALUATION_METRICS, METRICS_FILENAME,
                                  OVERVIEW_STEM, PREDICTIONS_FILENAME, S_VS_GT_SCRIPT1, SUMMARY_FILENAME,
                                  SWEEP_CSV_FILENAME, SWEEP_MARKDOWN_FILENAME, TRAINING_CURVES_STEM, figure_filename,
                                  heatmap_filename, metric_key)
from assertdistill.thesis_figures import save_thesis_figures

FORMATS = ("png", "pdf", "svg")
DEFAULT_MAIN_METRIC = metric_key(ACCURACY, S_VS_GT_SCRIPT1)
DEFAULT_DIRS = {"alpha": ("results_alpha", "graphs_alpha"), "temperature": ("results_temp", "graphs_temp")}


def build_arg_parser(swept_name: str, description: str) -> argparse.ArgumentParser:
    """The command line shared by the graph scripts, with defaults for the swept parameter."""
    results_dir, output_dir = DEFAULT_DIRS[swept_name]
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--results_dir", type=Path, default=Path(results_dir),
                        help=f"directory holding the runs' summaries: flat *.json files directly in it (the thesis's "
                             f"layout) and/or */{SUMMARY_FILENAME} below it (sweep.sh's); default: {results_dir}")
    parser.add_argument("--output_dir", type=Path, default=Path(output_dir),
                        help=f"where figures, {SWEEP_CSV_FILENAME}, {SWEEP_MARKDOWN_FILENAME} and "
                             f"{COMPARISONS_FILENAME} go; created if missing (default: {output_dir})")
    parser.add_argument("--format", choices=FORMATS, default="png", help="figure file format (default: png)")
    parser.add_argument("--main_metric", "--heatmap_metric", dest="main_metric", default=DEFAULT_MAIN_METRIC,
                        help=f"{FINAL_EVALUATION_METRICS} key shown in the alpha x T heatmap (drawn when the runs form "
                             "a grid of >= 2 values each) and whose best cell is the default reference of the paired "
                             f"comparisons (default: {DEFAULT_MAIN_METRIC})")
    parser.add_argument("--reference", default=None,
                        help="the cell every other is compared with, e.g. alpha=0.0 or alpha=0.5,temperature=2 "
                             "(default: the cell with the best mean of --main_metric)")
    return parser


def run_graphs(args: argparse.Namespace, swept_name: str, out=None, err=None) -> int:
    """Load the sweep in args.results_dir and write figures and tables; return the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    swept = plotting.AXES[swept_name]
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
    if args.main_metric not in available:
        print(f"error: --main_metric {args.main_metric} is in no summary; available: {', '.join(available)}",
              file=err)
        return 2
    main = results.METRICS_BY_KEY.get(args.main_metric, results.Metric(args.main_metric, args.main_metric))
    cells = results.aggregate(runs)
    predictions = intervals.load_all_predictions(runs, err)
    try:
        paired = comparisons.compare_cells(cells, predictions, main, args.reference)
    except comparisons.ReferenceSpecError as e:
        print(f"error: {e}", file=err)
        return 2
    intervals.attach_intervals(cells, predictions)
    print(f"loaded {len(runs)} runs in {len(cells)} (alpha, T) cells from {args.results_dir}"
          f" ({len(skipped)} skipped; {len(predictions)} with {PREDICTIONS_FILENAME})", file=out)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_outputs(args, swept, runs, cells, paired, out, err)
    except OSError as e:
        print(f"error: cannot write to {args.output_dir}: {e}", file=err)
        return 1
    return 0


def write_outputs(args, swept, runs, cells, paired, out, err) -> None:
    """Every figure and table into args.output_dir, one line each on `out`."""
    out_dir, fmt = args.output_dir, args.format
    figures = plotting.save_metric_figures(cells, runs, swept, out_dir, fmt)
    print(f"wrote {len(figures)} metric figures to {out_dir}/: {', '.join(p.name for p in figures)}", file=out)
    thesis = save_thesis_figures(cells, swept, out_dir, fmt)
    print(f"wrote the thesis's {len(thesis)} figures: {', '.join(p.name for p in thesis)}", file=out)
    path = out_dir / figure_filename(OVERVIEW_STEM, fmt)
    plotting.save_overview(cells, runs, swept, path)
    print(f"wrote {path} (all metrics as panels)", file=out)
    if plotting.is_grid(cells):
        path = out_dir / heatmap_filename(args.main_metric, fmt)
        plotting.save_heatmap(cells, args.main_metric, swept, path)
        print(f"wrote {path} (alpha x T grid)", file=out)
    else:
        print("heatmap: skipped (needs >= 2 alphas and >= 2 temperatures)", file=out)
    curves = plotting.load_curves(runs, err)
    path = out_dir / figure_filename(TRAINING_CURVES_STEM, fmt)
    if curves and plotting.save_training_curves(cells, curves, swept, path):
        print(f"wrote {path} ({len(curves)} runs with {METRICS_FILENAME})", file=out)
    else:
        print(f"training curves: skipped (no run has a usable {METRICS_FILENAME})", file=out)
    print(results.interval_note(cells), file=out)
    if paired.rows:
        comparisons.write_csv(paired, out_dir / COMPARISONS_FILENAME)
        print(f"wrote {out_dir / COMPARISONS_FILENAME} ({len(paired.rows)} paired comparisons with "
              f"{comparisons.cell_name(paired.reference)})", file=out)
    for line in paired.refused:
        print(line, file=out)
    print(paired.verdict, file=out)
    results.write_csv(cells, out_dir / SWEEP_CSV_FILENAME)
    results.write_markdown(cells, out_dir / SWEEP_MARKDOWN_FILENAME, [comparisons.markdown_section(paired)])
    print(f"wrote {out_dir / SWEEP_CSV_FILENAME} and {out_dir / SWEEP_MARKDOWN_FILENAME} (mean, std over seeds and "
          "interval per cell)", file=out)
