"""Mine JUnit tests from Java repositories into an assertion dataset (JSONL, see docs/DATA_FORMAT.md).

One line per test method: focal_file, test_method_masked, assertions, repo, test_path, focal_path,
test_class, test_method, plus focal_match (name / name_prefix / fallback: how the focal class was found).
Each --java_root DIR is one repository named after its basename; --repos_parent DIR adds every
non-hidden subdirectory of DIR that holds .java files. The split never divides a test file (nor, with
--split_by repo, a repository); copies of a test file below different test dirs (guava's android/
flavour) count as one file. What counts as a test / an assertion: assertdistill/java_mining.py.
Example:
    python make_dataset.py --repos_parent /work/javasrc --split_output_dir /work/javasrc/dataset
"""

import argparse
import json
import sys
import time
from pathlib import Path

from assertdistill.core.cli import reports_user_errors
from assertdistill.java.mining import MiningStats, mine_repos, split_records


def parse_args(argv=None):
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--java_root", nargs="+", default=[], type=Path,
                        help="repository roots; each is one repository, named after the directory")
    parser.add_argument("--repos_parent", nargs="+", default=[], type=Path,
                        help="directories whose non-hidden subdirectories containing .java files are repositories")
    parser.add_argument("--exclude", nargs="+", default=[],
                        help="fnmatch globs on REPO/relative/path.java to leave out, e.g. 'guava/android/*'")
    parser.add_argument("--output", type=Path, help="write every sample to this JSONL file")
    parser.add_argument("--split_output_dir", type=Path,
                        help="write train.jsonl and validation.jsonl into this directory")
    parser.add_argument("--val_fraction", type=float, default=0.1,
                        help="share of samples for validation, in [0, 1) (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split's hash order (default 0)")
    parser.add_argument("--split_by", choices=["file", "repo"], default="file",
                        help="keep each test file (default) or each repository within one split")
    args = parser.parse_args(argv)

    args.repos = [(root.resolve().name, root) for root in args.java_root]
    for parent in args.repos_parent:
        if not parent.is_dir():
            parser.error(f"--repos_parent {parent} is not a directory")
        for child in sorted(parent.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and next(child.rglob("*.java"), None):
                args.repos.append((child.name, child))
    if not args.repos:
        parser.error("give at least one repository with --java_root or --repos_parent")
    for name, root in args.repos:
        if not root.is_dir():
            parser.error(f"repository root {root} is not a directory")
    names = [name for name, _ in args.repos]
    if len(set(names)) != len(names):
        parser.error(f"repository names (directory basenames) must be unique: {sorted(names)}")
    if args.output is None and args.split_output_dir is None:
        parser.error("give --output and/or --split_output_dir")
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"--val_fraction must be in [0, 1), got {args.val_fraction}")
    return args


def write_jsonl(path: Path, records: list) -> None:
    """Write records as one JSON object per line (UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


@reports_user_errors(OSError)
def main(argv=None) -> int:
    """Mine the repositories, write the JSONL file(s), print counts by reason and samples/s."""
    args = parse_args(argv)
    stats = MiningStats()
    started = time.perf_counter()
    for name, root in args.repos:
        print(f"repository {name}: {root}", file=sys.stderr)
    records = list(mine_repos(args.repos, stats, args.exclude))
    mined_s = time.perf_counter() - started
    stats.check()

    if args.output is not None:
        write_jsonl(args.output, records)
        print(f"wrote {len(records)} samples to {args.output}")
    if args.split_output_dir is not None:
        train, val = split_records(records, args.val_fraction, args.seed, args.split_by)
        write_jsonl(args.split_output_dir / "train.jsonl", train)
        write_jsonl(args.split_output_dir / "validation.jsonl", val)
        stats.counts["train_samples"], stats.counts["validation_samples"] = len(train), len(val)
        print(f"wrote {len(train)} train / {len(val)} validation samples to {args.split_output_dir}")

    print(stats.format())
    print(f"mining: {mined_s:.1f} s, {len(records) / max(mined_s, 1e-9):.0f} samples/s "
          f"(total with writing {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
