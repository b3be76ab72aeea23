"""Distill a teacher's precomputed logits into a small seq2seq student that writes JUnit assertions.

The CLI of the thesis "Tiny but Mighty: Tuning Alpha and Temperature for Distilled SLMs in Assertion
Generation": same flags, defaults and summary keys. With --distillation_data_path every flag not given
has the thesis's default (student Salesforce/codet5-small, teacher Salesforce/codet5-base, ...), and
inner paths not given are taken from the published layout. Without it the embedded demo runs (the
demo archive and models, with the small-model settings of demo/run_defaults.json for every flag not
given). The data format: docs/DATA_FORMAT.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from assertdistill.distill.config import (  # noqa: F401  (the thesis's default models)
    THESIS_STUDENT,
    THESIS_TEACHER,
    RunConfig,
    SettingError,
    build_parser,
    parse_settings,
)
from assertdistill.distill.loss import DistillationLoss  # noqa: F401  (public API: from script import DistillationLoss)
from assertdistill.scoring.metrics import evaluate_assertions_script1_style  # noqa: F401  (public API)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line (the flags: assertdistill/config.py's RunConfig, docs/USAGE.md)."""
    parser = build_parser(__doc__.split("\n\n")[0], __doc__.split("\n\n", 1)[1])
    try:
        args = parse_settings(parser, argv)  # the command line over --config FILE over the demo's values
        RunConfig.from_namespace(args)  # its checks: ranges and choices
    except SettingError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one distillation; user errors become one line on stderr and exit code 2."""
    args = parse_args(argv)
    from assertdistill.core.cli import run_reporting_errors
    from assertdistill.data.layout import resolve_data_members
    from assertdistill.distill.run import USER_ERRORS, run_distillation

    config = RunConfig.from_namespace(args)

    def resolve_and_run() -> dict:
        members, picked = resolve_data_members(config.distillation_data_path, config.data_members())
        for line in picked:
            if os.environ.get("RANK", "0") == "0":  # once under torchrun
                print(line)
        return run_distillation(config.with_data_members(members))

    return run_reporting_errors(resolve_and_run, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
