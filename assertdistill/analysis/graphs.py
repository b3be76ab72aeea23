"""The command line of alpha_graphs.py, temperature_graphs.py and sweep_graphs.py: load a sweep, write
figures and tables, and remove the outputs of an earlier run in the same folder that this one did not write."""

import argparse
import sys
from pathlib import Path

from assertdistill.analysis import axes, comparisons, intervals, plotting, results
from assertdistill.analysis.thesis_figures import save_thesis_figures
from assertdistill.core.schema import (
    ACCURACY,
    ARGS,
    COMPARISONS_FILENAME,
    FINAL_EVALUATION_METRICS,
    METRICS_FILENAME,
    OVERVIEW_STEM,
    PREDICTIONS_FILENAME,
    S_VS_GT_SCRIPT1,
    SUMMARY_FILENAME,
    SWEEP_CSV_FILENAME,
    SWEEP_MARKDOWN_FILENAME,
    THESIS_FIGURES,
    TRAINING_CURVES_STEM,
    figure_filename,
    heatmap_filename,
    metric_key,
)

FORMATS = ("png", "pdf", "svg")
DEFAULT_MAIN_METRIC = metric_key(ACCURACY, S_VS_GT_SCRIPT1)
DEFAULT_DIRS = {"alpha": ("results_alpha", "graphs_alpha"), "temperature": ("results_temp", "graphs_temp")}


def default_dirs(swept_name: str) -> tuple[str, str]:
    """(results folder, output folder) by default: results_<axis> and graphs_<axis> (sweep.sh's results dir)."""
    return DEFAULT_DIRS.get(swept_name, (f"results_{swept_name}", f"graphs_{swept_name}"))


def build_arg_parser(swept_name: str, description: str, axis_flag: bool = False) -> argparse.ArgumentParser:
    """The command line shared by the graph scripts, with defaults for the swept setting."""
    results_dir, output_dir = ("results_<axis>", "graphs_<axis>") if axis_flag else default_dirs(swept_name)
    parser = argparse.ArgumentParser(description=description)
    if axis_flag:
        parser.add_argument("--axis", required=True,
                            help="the setting on the x axis: alpha, temperature (T), seed or any entry of the "
                                 "summaries' args, e.g. student_model_name; text values are spaced evenly. Default "
                                 "folders: results_<axis>, graphs_<axis> (results_temp/graphs_temp for temperature)")
    parser.add_argument("--results_dir", type=Path, default=None if axis_flag else Path(results_dir),
                        help=f"directory holding the runs' summaries: flat *.json files directly in it (the thesis's "
                             f"layout) and/or */{SUMMARY_FILENAME} below it (sweep.sh's); default: {results_dir}")
    parser.add_argument("--output_dir", type=Path, default=None if axis_flag else Path(output_dir),
                        help=f"where figures, {SWEEP_CSV_FILENAME}, {SWEEP_MARKDOWN_FILENAME} and "
                             f"{COMPARISONS_FILENAME} go; created if missing (default: {output_dir})")
    parser.add_argument("--format", choices=FORMATS, default="png", help="figure file format (default: png)")
    parser.add_argument("--main_metric", "--heatmap_metric", dest="main_metric", default=DEFAULT_MAIN_METRIC,
                        help=f"{FINAL_EVALUATION_METRICS} key shown in the heatmap (drawn when the cells form a "
                             "grid of the swept setting and one other, >= 2 values each) and whose best cell is the "
                             f"default reference of the paired comparisons (default: {DEFAULT_MAIN_METRIC})")
    parser.add_argument("--reference", default=None,
                        help="the cell every other is compared with, e.g. alpha=0.0 or alpha=0.5,temperature=2 "
                             "(any setting of the cells: student_model_name=dir2; default: the cell with the best "
                             "mean of --main_metric)")
    return parser


def with_default_dirs(args: argparse.Namespace) -> argparse.Namespace:
    """args with --results_dir / --output_dir filled in from --axis where they were not given."""
    results_dir, output_dir = default_dirs(axes.canonical_name(args.axis))
    args.results_dir = args.results_dir or Path(results_dir)
    args.output_dir = args.output_dir or Path(output_dir)
    return args


def is_graph_output(path: Path, formats=FORMATS) -> bool:
    """True for a file name the graph scripts write: tables, and figures of metrics, overview, heatmaps,
    training curves and the thesis's <axis>_vs_<name> figures."""
    if path.name in (SWEEP_CSV_FILENAME, SWEEP_MARKDOWN_FILENAME, COMPARISONS_FILENAME):
        return True
    stem, _, suffix = path.name.rpartition(".")
    if suffix not in formats:
        return False
    return (stem in results.METRICS_BY_KEY or stem in (OVERVIEW_STEM, TRAINING_CURVES_STEM)
            or stem.startswith(heatmap_filename("", suffix).removesuffix(f".{suffix}"))
            or any(stem.endswith(f"_vs_{name}") for name in THESIS_FIGURES))


def remove_stale_outputs(out_dir: Path, written: list[Path], out) -> None:
    """Delete the graph outputs in out_dir that this run did not write (left by a run on other results)."""
    keep = {path.name for path in written}
    for path in sorted(out_dir.iterdir()):
        if path.is_file() and is_graph_output(path) and path.name not in keep:
            path.unlink()
            print(f"removed {path} (an earlier run's output that this run did not write)", file=out)


def run_graphs(args: argparse.Namespace, swept_name: str, out=None, err=None) -> int:
    """Load the sweep in args.results_dir and write figures and tables; return the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    swept = axes.axis(swept_name)
    try:
        runs, skipped = results.load_runs(args.results_dir)
    except results.NoResultsError as e:
        for path, reason in e.skipped:
            print(f"skip {path}: {reason}", file=err)
        print(f"error: {e}", file=err)
        return 2
    for path, reason in skipped:
        print(f"skip {path}: {reason}", file=err)
    for run in runs:
        for problem in run.problems:
            print(f"skip {run.path}: {problem}", file=err)
    available = results.metric_keys(runs)
    if args.main_metric not in available:
        print(f"error: --main_metric {args.main_metric} is in no summary; available: {', '.join(available)}",
              file=err)
        return 2
    cells = results.aggregate(runs, pool_seeds=swept.name != axes.SEED.name)
    if all(cell.value(swept.name) is None for cell in cells):
        print(f"error: --axis {swept_name}: no run's {ARGS} has {swept.key}; the cells differ in "
              f"{', '.join(cells[0].axes)}", file=err)
        return 2
    main = results.METRICS_BY_KEY.get(args.main_metric, results.Metric(args.main_metric, args.main_metric))
    predictions = intervals.load_all_predictions(runs, err)
    try:
        paired = comparisons.compare_cells(cells, predictions, main, args.reference)
    except comparisons.ReferenceSpecError as e:
        print(f"error: {e}", file=err)
        return 2
    intervals.attach_intervals(cells, predictions)
    print(f"loaded {len(runs)} runs in {len(cells)} cells ({', '.join(cells[0].axes)}) from {args.results_dir}"
          f" ({len(skipped)} skipped; {len(predictions)} with {PREDICTIONS_FILENAME})", file=out)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        written = write_outputs(args, swept, runs, cells, paired, out, err)
        remove_stale_outputs(args.output_dir, written, out)
    except OSError as e:
        print(f"error: cannot write to {args.output_dir}: {e}", file=err)
        return 1
    return 0


def write_outputs(args, swept, runs, cells, paired, out, err) -> list[Path]:
    """Every figure and table into args.output_dir, one line each on `out`; returns the paths written."""
    out_dir, fmt = args.output_dir, args.format
    figures = plotting.save_metric_figures(cells, runs, swept, out_dir, fmt)
    print(f"wrote {len(figures)} metric figures to {out_dir}/: {', '.join(p.name for p in figures)}", file=out)
    thesis = save_thesis_figures(cells, swept, out_dir, fmt)
    print(f"wrote the thesis's {len(thesis)} figures: {', '.join(p.name for p in thesis)}", file=out)
    written = figures + thesis + [out_dir / figure_filename(OVERVIEW_STEM, fmt)]
    plotting.save_overview(cells, runs, swept, written[-1])
    print(f"wrote {written[-1]} (all metrics as panels)", file=out)
    other = plotting.grid_axis(cells, swept)
    if other is not None:
        written.append(out_dir / heatmap_filename(args.main_metric, fmt))
        plotting.save_heatmap(cells, args.main_metric, swept, written[-1])
        print(f"wrote {written[-1]} ({swept.name} x {other.name} grid)", file=out)
    else:
        print(f"heatmap: skipped (needs >= 2 values of {swept.name} and of exactly one other setting)", file=out)
    curves = plotting.load_curves(runs, err)
    path = out_dir / figure_filename(TRAINING_CURVES_STEM, fmt)
    if curves and plotting.save_training_curves(cells, curves, swept, path):
        written.append(path)
        print(f"wrote {path} ({len(curves)} runs with {METRICS_FILENAME})", file=out)
    else:
        print(f"training curves: skipped (no run has a usable {METRICS_FILENAME})", file=out)
    print(results.interval_note(cells), file=out)
    if paired.rows:
        written.append(out_dir / COMPARISONS_FILENAME)
        comparisons.write_csv(paired, written[-1])
        print(f"wrote {written[-1]} ({len(paired.rows)} paired comparisons with "
              f"{comparisons.cell_name(paired.reference)})", file=out)
    for line in paired.refused:
        print(line, file=out)
    print(paired.verdict, file=out)
    written += [out_dir / SWEEP_CSV_FILENAME, out_dir / SWEEP_MARKDOWN_FILENAME]
    results.write_csv(cells, written[-2])
    results.write_markdown(cells, written[-1], [comparisons.markdown_section(paired)])
    print(f"wrote {written[-2]} and {written[-1]} (mean, std over seeds and interval per cell)", file=out)
    return written
