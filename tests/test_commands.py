"""The `assertdistill` console command: it lists and dispatches the tools; the package's metadata agrees with
requirements.txt."""

import importlib
import json
import re
from pathlib import Path

import pytest

from assertdistill.commands import main as console

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        console.main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    for name in ("distill", "mine", "teacher-logits", "generate", "export-int8", "execute", "graphs", "compress",
                 "bench"):
        assert re.search(rf"^\s+{name}\s", listed, re.MULTILINE), name


def test_a_subcommand_shows_its_own_help_under_its_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        console.main(["generate", "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: assertdistill generate ") and "--model_dir" in shown


def test_a_subcommand_runs_with_its_arguments_and_returns_its_exit_code(capsys):
    argv = ["compress", "report", "--positions", "4", "--vocab", "64", "--records", "1", "--k", "4", "--json"]
    assert console.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["facts"]["positions"] == 4


def test_an_unknown_or_missing_subcommand_is_a_usage_error(capsys):
    for argv in (["train"], []):
        with pytest.raises(SystemExit) as exit_info:
            console.main(argv)
        assert exit_info.value.code == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    assert console.main(["export-int8", "--model_dir", str(tmp_path / "none"), "--output_dir", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", sorted(console.SUBCOMMANDS))
def test_each_subcommand_is_its_checkout_script(name):
    """`assertdistill NAME` runs the main() that the top-level script of a checkout runs."""
    command = console.SUBCOMMANDS[name]
    module = importlib.import_module(f"assertdistill.commands.{command.module}")
    script = importlib.import_module(command.script.removesuffix(".py"))
    assert script.main is module.main and script.parse_args is module.parse_args


def _requirement_lines(text: str) -> set[str]:
    return {line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()}


def test_pyproject_requires_what_requirements_txt_pins():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]).union(*project["optional-dependencies"].values())
    assert declared == _requirement_lines((ROOT / "requirements.txt").read_text())
    assert project["scripts"]["assertdistill"] == f"{console.__name__}:main"
