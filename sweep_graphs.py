"""Plot distillation metrics against any swept setting (`assertdistill graphs --axis NAME`); see --help."""

import sys

from assertdistill.commands.graphs import main, parse_args  # noqa: F401  (the body: assertdistill/commands/graphs.py)

if __name__ == "__main__":
    sys.exit(main())
