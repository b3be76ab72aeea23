"""Export a saved student with int8 weights (`assertdistill export-int8`); see --help."""

import sys

# the body: assertdistill/commands/export_int8.py
from assertdistill.commands.export_int8 import (  # noqa: F401
    main,
    parse_args,
)

if __name__ == "__main__":
    sys.exit(main())
