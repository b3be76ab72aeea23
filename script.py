"""One distillation run, the thesis's command line (`assertdistill distill`); see --help and docs/USAGE.md."""

import sys

# the body: assertdistill/commands/distill.py
from assertdistill.commands.distill import (  # noqa: F401
    THESIS_STUDENT,
    THESIS_TEACHER,
    DistillationLoss,
    evaluate_assertions_script1_style,
    main,
    parse_args,
)

if __name__ == "__main__":
    sys.exit(main())
