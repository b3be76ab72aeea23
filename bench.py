"""Benchmark the suite against a re-creation of the thesis pipeline (`assertdistill bench`); see --help."""

import sys

from assertdistill.commands.bench import main, parse_args  # noqa: F401  (the body: assertdistill/commands/bench.py)

if __name__ == "__main__":
    sys.exit(main())
