"""The README and docs/ pages: links resolve, the README's commands parse, no page narrates its own history."""

import re
import shlex
from pathlib import Path

import pytest

import script

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "demo" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # [text](target) and ![alt](target), anchors dropped
HISTORY = re.compile(r"\bthis (session|round)\b|\bround [12]\b|\bso far\b|\bwas lent\b|\bearlier session\b|"
                     r"\bprevious session\b|\bwe (measured|ran)\b", re.IGNORECASE)
README_MAX_LINES = 210


COMMAND_WORDS = ("python", "pip", "bash", "assertdistill", "tensorboard")


def readme_commands(section_title: str) -> list[list[str]]:
    """The indented command lines of one README section (backslash continuations joined), split like a shell;
    indented lines that do not start with a command (quoted output) are not commands."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {section_title}\n", 1)[1].split("\n## ", 1)[0]
    block = re.sub(r"\\\n\s*", " ", section)
    return [shlex.split(line.split("#", 1)[0]) for line in block.splitlines()
            if line.startswith("    ") and line.split()[0] in COMMAND_WORDS]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_of_a_page_resolves(page):
    missing = [target for target in LINK.findall(page.read_text(encoding="utf-8"))
               if "://" not in target and not (page.parent / target).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_no_page_narrates_its_own_history(page):
    lines = [line for line in page.read_text(encoding="utf-8").splitlines() if HISTORY.search(line)]
    assert not lines, f"{page.relative_to(ROOT)} narrates history (belongs in git): {lines}"


def test_readme_is_a_short_front_door_with_its_sections():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    for needed in ("Set-up and the demo", "The thesis's command", "Sweeps and figures", "What a run writes",
                   "The scripts", "Known limits", "Documentation"):
        assert needed in headings
    assert "{" not in "".join(line for line in text.splitlines() if not line.startswith("    "))


def test_the_set_up_commands_still_work():
    commands = readme_commands("Set-up and the demo")
    assert ["pip", "install", "-r", "requirements.txt"] in commands and (ROOT / "requirements.txt").is_file()
    assert ["python", "script.py"] in commands and ["python", "-m", "pytest", "-q"] in commands
    for command in commands:
        if command[:2] == ["python", "script.py"]:
            script.parse_args(command[2:])  # a flag that no longer parses exits here


def test_the_thesis_command_parses_with_its_values():
    (command,) = readme_commands("The thesis's command")
    args = script.parse_args(command[2:])
    assert args.alpha_kl_loss_weight == 0.5 and args.temperature == 2.0 and args.save_best_model
    assert args.student_model_name == "Salesforce/codet5-small"


def test_the_sweep_commands_name_existing_scripts_and_settings():
    settings = set(vars(script.parse_args([])))
    for command in readme_commands("Sweeps and figures"):
        assert (ROOT / command[1 if command[0] in ("bash", "python") else 0]).is_file(), command
        for flag, value in zip(command, command[1:]):
            if flag in ("--axis",):
                assert value in settings, f"sweep axis {value} is no setting of script.py"


def test_the_module_map_names_every_module_of_the_package():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    mapped = {name for row in re.findall(r"^\| (`[^|]*`) \|", text, re.MULTILINE)
              for name in re.findall(r"`([a-z_0-9]+/[a-z_0-9]+)`", row)}
    package = ROOT / "assertdistill"
    modules = {path.relative_to(package).with_suffix("").as_posix() for path in package.rglob("*.py")
               if path.stem != "__init__"}
    assert modules - mapped == set(), "docs/ARCHITECTURE.md's module map lacks these modules"
    assert mapped - modules == set(), "docs/ARCHITECTURE.md's module map names modules that do not exist"
