"""Benchmark the suite's data pipeline and training step against a faithful re-creation of the thesis pipeline.

Every pipeline runs in its own subprocess on the same generated archive (full-size 8-bit teacher
blocks) and the same model shapes (CodeT5-small and a tiny T5). The last line printed is
`speedup_vs_thesis=<x>`: training samples/s at CodeT5-small shape, suite / thesis. See docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--short", action="store_true",
                       help="16 records, batch 4, 2 timed steps per pipeline and shape (under 10 minutes on 2 cores)")
    modes.add_argument("--tiny-only", action="store_true",
                       help="smoke mode: 6 records, the tiny shape only, 1 timed step (seconds to a minute)")
    parser.add_argument("--compile", action="store_true",
                        help="also train the suite with torch.compile (script.py --compile) at the largest shape; "
                             "the default mode always does (compiling takes minutes on 2 cores)")
    parser.add_argument("--workdir", default=None,
                        help="directory for the temporary archive (about 40 MB per record); default: the system's")
    parser.add_argument("--json", default=None, help="also write all measurements to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the default mode is 40 records, batch 8, 3 timed steps."""
    args = parse_args(argv)
    from benchmarks.runner import run

    mode = "short" if args.short else "tiny-only" if args.tiny_only else "default"
    run(mode, workdir=args.workdir, json_path=args.json, compile_model=args.compile,
        log=lambda text: print(text, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
