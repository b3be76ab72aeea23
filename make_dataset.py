"""Mine JUnit tests from Java repositories into an assertion dataset (`assertdistill mine`); see --help."""

import sys

# the body: assertdistill/commands/mine.py
from assertdistill.commands.mine import (  # noqa: F401
    main,
    parse_args,
    write_jsonl,
)

if __name__ == "__main__":
    sys.exit(main())
