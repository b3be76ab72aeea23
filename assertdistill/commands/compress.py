"""Inspect, convert and measure teacher-logit archives; also the codec API the thesis script imports.

    from compress import compress_logits, decompress_logits   # the published 4/8/16/32-bit codec: every
                                                              # object its decoder reads gives its array

    python compress.py inspect DATA.zip [--inner PATH ...] [--limit N] [--json]
    python compress.py convert IN.zip OUT.zip --to topk --k 64 [--max_positions 128]
    python compress.py convert IN.zip OUT.zip --to 4
    python compress.py report [--positions 64] [--vocab 32100] [--seed 0] [--from DATA.zip] [--json]

Formats: docs/DATA_FORMAT.md (published) and docs/TOPK_FORMAT.md (top-k, with the measured report).
User errors (missing file, not a ZIP, unreadable member) print one line `error: ...` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from assertdistill.codec.codec import compress_logits, decompress_logits  # noqa: F401  (public API: from compress import ...)
from assertdistill.codec.hexframes import CodecError
from assertdistill.core.cli import run_reporting_errors
from assertdistill.data.archive import DEFAULT_MAX_RECORD_BYTES, DataError

USER_ERRORS = (DataError, CodecError, OSError)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="report what an archive's records hold")
    inspect.add_argument("data", help="outer ZIP (nested layout of docs/DATA_FORMAT.md)")
    inspect.add_argument("--inner", nargs="+", default=None,
                         help="inner ZIP member(s) to inspect (default: every *.zip member)")
    inspect.add_argument("--limit", type=_positive, default=None, help="inspect only the first N records per file")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    inspect.add_argument("--max_record_bytes", type=_positive, default=DEFAULT_MAX_RECORD_BYTES,
                         help="longest record line read (bytes); a longer one is skipped unread and counted too_large")

    convert = commands.add_parser("convert", help="rewrite every record's compressed_logits in another format")
    convert.add_argument("input", help="outer ZIP to read")
    convert.add_argument("output", help="outer ZIP to write (same layout, member names and header)")
    convert.add_argument("--to", required=True, choices=["topk", "4", "8", "16", "32"],
                         help="topk (sparse, docs/TOPK_FORMAT.md) or the published format at 4/8/16/32 bits")
    convert.add_argument("--k", type=_positive, default=None, help="logits kept per position with --to topk")
    convert.add_argument("--max_positions", type=_positive, default=None,
                         help="keep only the first N positions of each record; the generator padded T to 512 "
                              "while targets are 20-80 tokens, so N >= the student's max target length "
                              "(--student_max_tgt_length) loses nothing the loss reads")
    convert.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    convert.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    convert.add_argument("--max_record_bytes", type=_positive, default=DEFAULT_MAX_RECORD_BYTES,
                         help="longest record line read (bytes); a longer one is dropped, unread, and counted")

    report = commands.add_parser("report", help="bytes and KL of every stored form, per temperature")
    report.add_argument("--positions", type=_positive, default=64, help="positions per record (default 64)")
    report.add_argument("--vocab", type=_positive, default=32100, help="vocabulary size V of synthetic logits")
    report.add_argument("--records", type=_positive, default=2, help="records to average over (default 2)")
    report.add_argument("--seed", type=int, default=0, help="seed of the synthetic logits")
    report.add_argument("--body_std", type=float, default=2.0,
                        help="std (logits) of the gaussian body of the synthetic rows; top-k is sensitive to it")
    report.add_argument("--from", dest="source", default=None,
                        help="measure the decoded records of this archive instead of synthetic logits")
    report.add_argument("--inner", default=None, help="inner ZIP of --from (default: the first *.zip member)")
    report.add_argument("--k", type=_positive, nargs="+", default=[16, 64, 256], help="top-k sizes to measure")
    report.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                        help="softmax temperatures T of the KL (default 1 2 4)")
    report.add_argument("--max_record_bytes", type=_positive, default=DEFAULT_MAX_RECORD_BYTES,
                        help="longest record line of --from read (bytes); a longer one is skipped unread")
    report.add_argument("--json", action="store_true", help="print the report as JSON")

    args = parser.parse_args(argv)
    if args.command == "convert" and (args.to == "topk") != (args.k is not None):
        parser.error("--k is required with --to topk and only allowed there")
    if args.command == "report" and (min(args.temperatures) <= 0 or args.body_std < 0):
        parser.error("--temperatures must be > 0 and --body_std >= 0")
    return args


def run_inspect(args) -> None:
    """Print the inspection report of one archive."""
    from assertdistill.data.inspect_data import format_reports, inspect_archive

    reports = inspect_archive(args.data, args.inner, args.limit, progress=not args.no_progress,
                              max_record_bytes=args.max_record_bytes)
    if args.json:
        print(json.dumps({"archive": args.data, "members": [report.as_dict() for report in reports]}, indent=2))
    else:
        print(format_reports(args.data, reports))


def run_convert(args) -> None:
    """Convert one archive and print what happened per JSONL member."""
    from assertdistill.data.convert_data import Target, convert_archive

    if os.path.exists(args.output) and not args.overwrite:
        raise DataError(f"{args.output} exists; pass --overwrite to replace it")
    target = Target(args.to, args.k, args.max_positions)
    for stats in convert_archive(args.input, args.output, target, progress=not args.no_progress,
                                 max_record_bytes=args.max_record_bytes):
        print(stats.describe())
    print(f"wrote {args.output} ({target.label}"
          + (f", first {args.max_positions} positions" if args.max_positions else "") + ")")


def run_report(args) -> None:
    """Print the bytes / KL table of every stored form."""
    from collections import Counter

    from assertdistill.data.storage_report import (
        archive_blocks,
        default_forms,
        describe_blocks,
        format_table,
        lossy_source_note,
        measure,
        synthetic_blocks,
    )

    sources = Counter()
    if args.source:
        blocks = archive_blocks(args.source, args.inner, args.positions, args.records, sources, args.max_record_bytes)
    else:
        blocks = synthetic_blocks(args.records, args.positions, args.vocab, args.seed, args.body_std)
    results, facts = measure(blocks, default_forms(args.k), args.temperatures, args.k)
    origin = (f"{args.source} ({dict(sources)})" if args.source
              else f"synthetic teacher-like logits (gaussian body std {args.body_std:g} + spikes), seed {args.seed}")
    note = lossy_source_note(sources)
    if args.json:
        print(json.dumps({"origin": origin, "facts": facts, "note": note,
                          "forms": [result.as_dict(facts["positions"]) for result in results]}, indent=2))
        return
    print(f"originals: {origin}")
    print(describe_blocks(facts))
    if note:
        print(note)
    print(format_table(results, facts, args.temperatures))


def main(argv=None) -> int:
    """Run one subcommand; user errors become one line on stderr and exit code 2."""
    args = parse_args(argv)
    commands = {"inspect": run_inspect, "convert": run_convert, "report": run_report}
    try:
        return run_reporting_errors(lambda: commands[args.command](args), USER_ERRORS)
    except BrokenPipeError:  # stdout closed early (`inspect ... | head`): silence the final flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
