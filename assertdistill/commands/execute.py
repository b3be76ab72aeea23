"""Do the assertions compile, pass and catch bugs? Run each record's candidates in its real test (docs/EXECUTION.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from assertdistill.core.cli import reports_user_errors
from assertdistill.core.schema import (
    EXECUTION_CANDIDATES,
    EXECUTION_FIGURE_STEM,
    EXECUTION_FILENAME,
    EXECUTION_SUMMARY_FILENAME,
    SUM_EXECUTABLE,
    SUM_MUTATION,
    SUM_PROJECTS,
    SUM_RECORDS,
    SUM_SECONDS,
    SUM_SETTINGS,
    SUM_TRIED,
    figure_filename,
)
from assertdistill.distill.summary import write_json_atomic
from assertdistill.execution.figure import save_execution_figure
from assertdistill.execution.jvm import JavaUnavailable
from assertdistill.execution.mutants import MUTATION_TOOLS, MutationUnavailable
from assertdistill.execution.outcome_summary import project_line, summarize
from assertdistill.execution.pipeline import (
    ISOLATION_CANDIDATE,
    ISOLATIONS,
    ExecutionSettings,
    evaluate_records,
    in_order,
    read_rows,
    write_rows,
)
from assertdistill.execution.project import ProjectError, load_layouts
from assertdistill.execution.sandbox import SandboxUnavailable, sandbox_for


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", required=True, help="predictions.jsonl (or rows with repo, test_path, "
                        "test_method and the candidate texts)")
    parser.add_argument("--java_root", required=True, help="DIR with one source tree per repo: DIR/<repo>/")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--candidates", default=",".join(EXECUTION_CANDIDATES),
                        help="comma-separated row fields to run (default: %(default)s)")
    parser.add_argument("--mutants", type=int, default=0, metavar="N",
                        help="up to N LittleDarwin mutants of each record's focal class (needs focal_path)")
    parser.add_argument("--mutation_tool", choices=sorted(MUTATION_TOOLS), default="littledarwin",
                        help="what makes the mutants (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per test run (default %(default)s)")
    parser.add_argument("--projects", default=None, help="JSON of repo -> layout and Debian jars "
                        "(default: Maven layout, no jars beyond JUnit); the demo's: demo/java_projects.json")
    parser.add_argument("--work_dir", default=None, help="build and scratch directory (default OUTPUT_DIR/work)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    parser.add_argument("--figure_format", default="png", help="format of execution.<fmt> (default %(default)s)")
    parser.add_argument("--heap", default="2g", help="the runner JVM's -Xmx (default %(default)s)")
    parser.add_argument("--compile_timeout", type=float, default=60.0,
                        help="seconds for one candidate's javac (outcome compile_timeout; default %(default)s)")
    parser.add_argument("--isolation", choices=ISOLATIONS, default=ISOLATION_CANDIDATE,
                        help="candidate: a fresh JVM per candidate; leak: one JVM restarted whenever a run "
                             "left state behind (default %(default)s; docs/EXECUTION.md)")
    parser.add_argument("--unsafe_no_sandbox", action="store_true",
                        help="run candidates without the operating-system sandbox (bubblewrap) when it cannot start")
    return parser.parse_args(argv)


@reports_user_errors(ProjectError, OSError, UnicodeDecodeError, JavaUnavailable, MutationUnavailable)
def main(argv=None) -> int:
    """Evaluate and write execution.jsonl and execution_summary.json; 0 on success."""
    args = parse_args(argv)
    candidates = tuple(name for name in args.candidates.split(",") if name)
    unknown = [name for name in candidates if name not in EXECUTION_CANDIDATES]
    if unknown or not candidates:
        print(f"error: --candidates must be among {','.join(EXECUTION_CANDIDATES)}, got {args.candidates!r}",
              file=sys.stderr)
        return 2
    predictions, java_root, out = Path(args.predictions), Path(args.java_root), Path(args.output_dir)
    if not predictions.is_file():
        print(f"error: --predictions {predictions} is not a file", file=sys.stderr)
        return 2
    if not java_root.is_dir():
        print(f"error: --java_root {java_root} is not a directory", file=sys.stderr)
        return 2
    try:
        sandbox = sandbox_for(args.heap, args.unsafe_no_sandbox)
    except SandboxUnavailable as error:
        print(f"error: {error}; refusing to run model-written code unconfined (--unsafe_no_sandbox to do so)",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    try:
        layouts = load_layouts(args.projects)
        records, bad_rows = read_rows(predictions, candidates, java_root)
    except (ProjectError, OSError, UnicodeDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.limit is not None:
        records = records[:args.limit]
    settings = ExecutionSettings(java_root.resolve(), Path(args.work_dir or out / "work").resolve(), candidates,
                                 args.timeout, args.mutants, layouts, args.heap, args.compile_timeout, sandbox,
                                 args.isolation, args.mutation_tool)
    started = time.time()

    def progress(repo, count, facts):
        print(project_line(repo, count, facts), flush=True)

    try:
        rows, projects, mutation = evaluate_records(records, settings, progress)
    except (JavaUnavailable, MutationUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = in_order(bad_rows + rows, candidates)
    summary = summarize(rows, candidates)
    summary[SUM_PROJECTS] = projects
    summary[SUM_SETTINGS] = vars(args)
    summary[SUM_MUTATION] = mutation or None
    summary[SUM_SECONDS] = round(time.time() - started, 1)
    write_rows(out / EXECUTION_FILENAME, rows)
    write_json_atomic(str(out / EXECUTION_SUMMARY_FILENAME), summary)
    save_execution_figure(summary, out / figure_filename(EXECUTION_FIGURE_STEM, args.figure_format))
    counts = summary[SUM_RECORDS]
    print(f"{counts[SUM_EXECUTABLE]} of {counts[SUM_TRIED]} records executable; {out / EXECUTION_SUMMARY_FILENAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
