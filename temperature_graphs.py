"""Plot distillation metrics against the temperature T, one line per alpha.

Reads the summaries in --results_dir, flat *.json files (the thesis's layout) and/or
*/distillation_summary.json (as written by sweep.sh temp), and writes the thesis's four figures, one
figure per metric, overview.<fmt>, a heatmap when the runs form an alpha x T grid, training curves
from metrics.jsonl when present, summary.csv / summary.md (mean, std over seeds and a 95% interval per
cell) and, for runs with predictions.jsonl, comparisons.csv (each cell against the best, record by record).
"""

import sys

from assertdistill.analysis.graphs import build_arg_parser, run_graphs
from assertdistill.core.cli import reports_user_errors

SWEPT = "temperature"  # the hyperparameter on the x axis; alpha_graphs.py differs only here


def parse_args(argv=None):
    """Parse the command line (see --help)."""
    return build_arg_parser(SWEPT, description=__doc__.splitlines()[0]).parse_args(argv)


@reports_user_errors(OSError)
def main(argv=None) -> int:
    """Write the temperature-sweep graphs and tables; return the exit code (2: no usable summaries, bad flag)."""
    return run_graphs(parse_args(argv), SWEPT)


if __name__ == "__main__":
    sys.exit(main())
