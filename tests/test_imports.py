"""Layers: every assertdistill module imports, and no chain of imports (function-local ones included) loops."""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import assertdistill

PACKAGE = Path(assertdistill.__file__).parent
MODULES = sorted(info.name for info in pkgutil.iter_modules([str(PACKAGE)]))


def package_imports(module: str) -> set[str]:
    """The assertdistill modules `module` imports anywhere in its source (module level and inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 1:  # from .x import y / from . import x
            names = [node.module] if node.module else [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("assertdistill"):
            names = [node.module.removeprefix("assertdistill").lstrip(".") or alias.name for alias in node.names]
        else:
            continue
        for name in names:
            name = name.removeprefix("assertdistill.").split(".")[0]
            if name in MODULES and name != module:
                targets.add(name)
    return targets


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state, path = {}, []  # state: 1 on the current path, 2 done

    def visit(node):
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(f"assertdistill.{module}")


def test_no_import_cycle_in_the_package():
    graph = {module: package_imports(module) for module in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_hidden_cycle():
    assert find_cycle({"attention": {"models"}, "models": {"attention", "dropout"}, "dropout": set()}) == [
        "attention", "models", "attention"]
    assert find_cycle({"records": {"jsonline"}, "jsonline": {"codec"}, "codec": set()}) is None


def test_data_layer_does_not_import_the_loss():
    assert "loss" not in package_imports("dataset") and "models" not in package_imports("attention")
