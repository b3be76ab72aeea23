"""The `assertdistill` console command: one subcommand per tool, each the main() of a module of this package."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: the module whose main(argv) runs it, the script it equals, and one line of help."""

    module: str
    script: str
    summary: str


SUBCOMMANDS = {
    "distill": Subcommand("distill", "script.py", "one distillation run: the thesis's command line"),
    "mine": Subcommand("mine", "make_dataset.py", "mine JUnit tests from Java repositories into an assertion dataset"),
    "teacher-logits": Subcommand("teacher_logits", "make_teacher_logits.py",
                                 "run a teacher over an assertion dataset and package the distillation archive"),
    "generate": Subcommand("generate", "generate_assertions.py",
                           "write a saved student's assertions into Java test files"),
    "export-int8": Subcommand("export_int8", "export_int8.py", "export a saved student with int8 weights"),
    "execute": Subcommand("execute", "evaluate_execution.py",
                          "compile and run each predicted assertion in its real test, with mutants"),
    "graphs": Subcommand("graphs", "sweep_graphs.py",
                         "figures and tables of a sweep over any setting (--axis alpha: alpha_graphs.py, "
                         "--axis temperature: temperature_graphs.py)"),
    "compress": Subcommand("compress", "compress.py", "inspect, convert and measure teacher-logit archives"),
    "bench": Subcommand("bench", "bench.py",
                        "the suite against a re-creation of the thesis pipeline (from a checkout's root only)"),
}
PROGRAM = "assertdistill"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: it only picks the subcommand; the subcommand parses the rest."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Distill JUnit-assertion generators from a teacher's logits, and the tools "
        "around it. `assertdistill COMMAND --help` shows a command's flags.",
        epilog="Each command is also a script of a checkout, with the same flags: "
        + ", ".join(f"{name} = python {command.script}" for name, command in SUBCOMMANDS.items()) + ".")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    for name, command in SUBCOMMANDS.items():
        commands.add_parser(name, help=command.summary, add_help=False)
    return parser


@contextlib.contextmanager
def program_name(name: str):
    """Within the block, argparse's default prog (the basename of sys.argv[0]) is `name`."""
    saved = sys.argv[0] if sys.argv else None
    if sys.argv:
        sys.argv[0] = name
    else:
        sys.argv.append(name)
    try:
        yield
    finally:
        if saved is None:
            sys.argv.pop()
        else:
            sys.argv[0] = saved


def main(argv: list[str] | None = None) -> int:
    """Run `assertdistill COMMAND [ARGS...]`: COMMAND's main(ARGS); its exit code is returned."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    parser.parse_args(argv[:1])  # --help, a missing or unknown command: argparse prints and exits here
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"{__package__}.{SUBCOMMANDS[name].module}")
    with program_name(f"{PROGRAM} {name}"):
        return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
