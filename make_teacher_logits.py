"""Run a teacher over an assertion dataset and package its logits (`assertdistill teacher-logits`); see --help."""

import sys

# the body: assertdistill/commands/teacher_logits.py
from assertdistill.commands.teacher_logits import (  # noqa: F401
    main,
    parse_args,
)

if __name__ == "__main__":
    sys.exit(main())
