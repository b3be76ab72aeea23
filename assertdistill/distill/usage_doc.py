"""docs/USAGE.md, script.py's flag reference, written from RunConfig's declaration.

    python -m assertdistill.distill.usage_doc --write     # or without --write: print it

tests/test_config.py fails when docs/USAGE.md differs from what this writes.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..core.paths import DEMO, REPO_ROOT
from .config import GROUPS, SETTINGS, Setting, demo_defaults

USAGE_PATH = os.path.join(REPO_ROOT, "docs", "USAGE.md")
INTRO = """\
# script.py's flags

What every flag of `script.py` (one distillation run) does, its default and the checks it must pass.
With `--distillation_data_path` every flag not given has the thesis's default below; without it the
embedded demo runs with the values in the last table for the flags not given. `python script.py
--help` prints the same. A flag marked "resume must match" refuses a `--resume_from_checkpoint` made
with another value.

`--config FILE` reads settings from a YAML or JSON file whose keys are the names below without the dashes
(`learning_rate: 0.002`; keys starting with `_` are notes); a flag given on the command line overrides
the file, and a key that names no setting is refused by name. Paths in it are read as on the command
line (relative to the current directory); a switch it turns on is turned off by `--no_<name>`
(`--no_save_best_model`), which every switch below has.
`demo/run_defaults.json` is such a file: `python script.py --config demo/run_defaults.json
--distillation_data_path ARCHIVE` runs the demo's models and settings on another archive.

This page is written by `python -m assertdistill.distill.usage_doc --write` from the declaration of the
settings (`RunConfig` in `assertdistill/distill/config.py`); edit that, not this page. A new flag is one
field there (`setting(default, group, help, ...)`) plus the code that uses it.
"""


def _cell(text: str) -> str:
    """Text shown as written inside a Markdown table cell (no tags, emphasis or cell breaks)."""
    for mark in "\\|*<>":
        text = text.replace(mark, "\\" + mark)
    return text


def _value(value) -> str:
    """A default as the table shows it."""
    if value is None:
        return "not given"
    if value is False:
        return "off"
    if value in (DEMO.archive, DEMO.teacher, DEMO.student):  # relative to the working directory: show the repo's
        value = os.path.relpath(os.path.abspath(value), REPO_ROOT)
    return f"`{value}`"


def _rules(spec: Setting) -> str:
    """The setting's range, choices and resume rule, as one cell."""
    rules = []
    if spec.choices is not None:
        rules.append("one of " + ", ".join(f"`{choice}`" for choice in spec.choices))
    if spec.minimum is not None and spec.maximum is not None:
        rules.append(f"{spec.minimum:g} to {spec.maximum:g}")
    elif spec.minimum is not None:
        rules.append(f">= {spec.minimum:g}")
    elif spec.maximum is not None:
        rules.append(f"<= {spec.maximum:g}")
    if spec.above is not None:
        rules.append(f"> {spec.above:g}")
    if spec.below is not None:
        rules.append(f"< {spec.below:g}")
    if spec.resume_must_match:
        rules.append("resume must match")
    return "; ".join(rules)


def render() -> str:
    """The page's Markdown."""
    lines = [INTRO]
    for group in GROUPS:
        specs = [spec for spec in SETTINGS if spec.group == group]
        lines += [f"## {group}", "", "| flag | default | meaning | rules |", "| --- | --- | --- | --- |"]
        for spec in specs:
            flags = ", ".join(f"`{flag}`" for flag in spec.flags)
            kind = "" if spec.kind is bool else f" {spec.kind.__name__.upper()}"
            lines.append(f"| {flags}{kind} | {_value(spec.default)} | {_cell(spec.help)} | {_rules(spec)} |")
        lines.append("")
    lines += ["## The embedded demo's values", "",
              "Taken for every flag not given when `--distillation_data_path` is not given "
              "(the numbers come from `demo/run_defaults.json`).", "",
              "| flag | demo value |", "| --- | --- |"]
    lines += [f"| `--{name}` | {_value(value)} |" for name, value in demo_defaults().items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the page, or write it to docs/USAGE.md with --write."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {os.path.relpath(USAGE_PATH, REPO_ROOT)}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        with open(USAGE_PATH, "w", encoding="utf-8") as stream:
            stream.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
