"""Plot distillation metrics against any swept setting (--axis), one line per value of the other axes.

Reads the summaries in --results_dir like alpha_graphs.py (flat *.json and/or */distillation_summary.json
as sweep.sh writes them, e.g. `bash sweep.sh --axis student_model_name --values "a b"`) and writes the
same figures and tables with --axis on the x axis: alpha, temperature, seed (then every run is its own
cell) or any entry of the summaries' args; a setting whose values are text is drawn at evenly spaced
positions. Runs that differ in any other setting are separate cells, never pooled as seeds.
"""

import sys

from assertdistill.analysis import axes
from assertdistill.analysis.graphs import build_arg_parser, run_graphs, with_default_dirs
from assertdistill.core.cli import reports_user_errors


def parse_args(argv=None):
    """Parse the command line (see --help); --results_dir / --output_dir default to results_<axis> / graphs_<axis>."""
    parser = build_arg_parser("alpha", description=__doc__.splitlines()[0], axis_flag=True)
    return with_default_dirs(parser.parse_args(argv))


@reports_user_errors(OSError)
def main(argv=None) -> int:
    """Write the graphs and tables of one axis; return the exit code (2: no usable summaries, bad flag)."""
    args = parse_args(argv)
    return run_graphs(args, axes.canonical_name(args.axis))


if __name__ == "__main__":
    sys.exit(main())
