"""Write a saved student's assertions into Java test files (`assertdistill generate`); see --help."""

import sys

# the body: assertdistill/commands/generate.py
from assertdistill.commands.generate import (  # noqa: F401
    main,
    parse_args,
)

if __name__ == "__main__":
    sys.exit(main())
