"""Compile and run each predicted assertion in its real test (`assertdistill execute`); see --help."""

import sys

# the body: assertdistill/commands/execute.py
from assertdistill.commands.execute import (  # noqa: F401
    main,
    parse_args,
)

if __name__ == "__main__":
    sys.exit(main())
