"""Write a saved student's assertions into Java test files at each `// <ASSERTION_PLACEHOLDER>` line.

Each method's model input is built as training and evaluation build it: the method (test_method_masked)
and the focal class found by make_dataset.py's rules below --source_root (default: the test file's
src/test/java -> src/main/java), or the method alone when none is found. The student writes a method's
assertions as lines: line i replaces placeholder i, extra lines go under the last one.
Examples:
    python generate_assertions.py --model_dir out/final_student_model src/test/java/com/x/FooTest.java
    python generate_assertions.py --model_dir out/final_student_model --json --mask_existing src/test
    python generate_assertions.py --model_dir out/final_student_model --in_place FooTest.java
Output: a unified diff on stdout (default), or one JSON object per placeholder (--json: file, method,
line, assertion, latency_ms); --in_place rewrites the files. Exit 1 when a file failed (the others are
still processed), 2 for a bad model directory or command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from assertdistill.core.cli import reports_user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""
    from assertdistill.deploy.saved_student import BACKENDS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="Java test files, or directories searched for them")
    parser.add_argument("--model_dir", required=True,
                        help="a saved student (final_student_model/, best_student_model/) or its int8 export")
    parser.add_argument("--num_beams", type=int, default=None,
                        help="beam width; default: the saved run's --num_beams, else 4")
    parser.add_argument("--source_root", default=None,
                        help="where focal classes are looked up; default: the test file's src/main/java")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch: the float32 student; int8: torch dynamic int8 (an int8 export is int8 always); bf16: bf16 "
                             "weights where the CPU has AVX512-BF16 or AMX (else float32, said once)")
    parser.add_argument("--retrieval_index", default=None,
                        help="for a student trained with --retrieval_augment K: the BM25 index its examples come from "
                             "(default: retrieval_index/ beside --model_dir; docs/RETRIEVAL.md)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per placeholder instead of a diff")
    parser.add_argument("--in_place", action="store_true", help="rewrite the files (atomically) instead of a diff")
    parser.add_argument("--mask_existing", action="store_true",
                        help="first replace the test methods' assertions with placeholders, as the dataset does")
    parser.add_argument("--overwrite_assertions", action="store_true",
                        help="with --mask_existing --in_place: replace the files' real assertions with the student's")
    args = parser.parse_args(argv)
    if args.num_beams is not None and args.num_beams < 1:
        parser.error("--num_beams must be >= 1")
    if args.mask_existing and args.in_place and not args.overwrite_assertions:
        parser.error("--mask_existing --in_place replaces the files' own assertions; add --overwrite_assertions "
                     "to do that, or leave out --in_place for a diff")
    if args.source_root is not None and not os.path.isdir(args.source_root):
        parser.error(f"--source_root {args.source_root} is not a directory")
    return args


@reports_user_errors(OSError)
def main(argv: list[str] | None = None) -> int:
    """Fill the placeholders; one line per failed file on stderr."""
    args = parse_args(argv)
    from assertdistill.deploy.assertion_writer import (
        AssertionWriter,
        collect_files,
        retriever_for,
        unified_diff,
        write_in_place,
    )
    from assertdistill.deploy.saved_student import DEFAULT_NUM_BEAMS, SavedStudentError, load_saved_student
    from assertdistill.java.placeholders import JavaInputError

    try:
        student = load_saved_student(args.model_dir, args.backend)
        retriever = retriever_for(student, args.model_dir, args.retrieval_index)
    except SavedStudentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    num_beams = args.num_beams or int(student.setting("num_beams", DEFAULT_NUM_BEAMS))
    writer = AssertionWriter(student, num_beams, args.source_root, retriever)
    files, failures = collect_files(args.paths, args.mask_existing)
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    without_focal = placeholders = done = empty = 0
    for path in files:
        try:
            result = writer.process(path, args.mask_existing)
            if args.in_place:
                write_in_place(path, result.raw_updated())
        except (JavaInputError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            failures.append(path)
            continue
        done += 1
        without_focal += result.without_focal
        placeholders += len(result.written)
        empty += sum(1 for written in result.written if not written.assertion)
        if result.outside_methods:
            print(f"note: {path}: {result.outside_methods} placeholder(s) outside a method left alone", file=sys.stderr)
        if args.json:
            for written in result.written:
                print(json.dumps(written.as_dict()))
        elif not args.in_place:
            sys.stdout.write(unified_diff(result))
    if without_focal:
        print(f"note: no focal class found for {without_focal} method(s): their input is the test method alone",
              file=sys.stderr)
    if empty:
        print(f"note: the student wrote no line for {empty} placeholder(s); they are left as they are", file=sys.stderr)
    print(f"{placeholders} placeholder(s) in {done} file(s): {placeholders - empty} got an assertion, {empty} none "
          f"({student.backend}, beam {num_beams}); {len(failures)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
