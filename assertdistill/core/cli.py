"""What every command-line entry point shares: user errors as one line and an exit code."""

from __future__ import annotations

import functools
import sys
from typing import Callable


def run_reporting_errors(action: Callable[[], object], user_errors: tuple[type[BaseException], ...]) -> int:
    """Run action(); a user error prints 'error: ...' on stderr (exit 2), Ctrl-C exits 130; else the int action
    returned is the exit code (anything else: 0)."""
    try:
        result = action()
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def reports_user_errors(*user_errors: type[BaseException]):
    """Decorate a script's main(argv=None) -> int so that it runs through run_reporting_errors."""

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def main_reporting_errors(argv: list[str] | None = None) -> int:
            return run_reporting_errors(lambda: main(argv), user_errors)

        return main_reporting_errors

    return decorate
