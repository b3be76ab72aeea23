"""What every command-line entry point shares: user errors as one line and an exit code."""

from __future__ import annotations

import sys
from typing import Callable


def run_reporting_errors(action: Callable[[], object], user_errors: tuple[type[BaseException], ...]) -> int:
    """Run action(); a user error prints 'error: ...' on stderr (exit 2), Ctrl-C exits 130, else 0."""
    try:
        action()
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
