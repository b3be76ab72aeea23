"""Build a retrieval index from your own Java project's tests, for generate_assertions.py --retrieval_index DIR.

    python -m assertdistill.retrieval.project_index --java_root path/to/project --output_dir my_index

The tests are mined as make_dataset.py mines them (one entry per test method with assertions: its masked
method and its assertions); generate_assertions.py never retrieves a test of the file it is filling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .baseline import project_entries
from .code_tokens import DEFAULT_TOKENIZATION, TOKENIZATIONS
from .index import IndexSettings, RetrievalIndex, RetrievalIndexError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--java_root", nargs="+", required=True, help="project directories whose tests are indexed")
    parser.add_argument("--output_dir", required=True, help="where the index is written (created)")
    parser.add_argument("--exclude", nargs="*", default=[], help="glob patterns of paths left out, as make_dataset.py")
    parser.add_argument("--tokenization", choices=TOKENIZATIONS, default=DEFAULT_TOKENIZATION,
                        help="BM25 tokens: whole identifiers, their camel/snake parts, or both")
    args = parser.parse_args(argv)
    missing = [root for root in args.java_root if not Path(root).is_dir()]
    if missing:
        parser.error(f"--java_root {', '.join(missing)}: not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    """Mine, index, save; one line on what was indexed."""
    args = parse_args(argv)
    entries, stats = project_entries([Path(root) for root in args.java_root], args.exclude)
    try:
        index = RetrievalIndex.build(entries, IndexSettings(tokenization=args.tokenization))
    except RetrievalIndexError as error:
        print(f"error: {error}: no test method with assertions under {', '.join(args.java_root)}", file=sys.stderr)
        return 1
    index.save(args.output_dir)
    print(f"{len(index)} test methods indexed into {args.output_dir}; mining:\n{stats.format()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
