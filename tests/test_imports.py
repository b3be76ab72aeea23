"""Layers: every module imports, no import chain loops, and each sub-package imports only the layers below it."""

import ast
import importlib
from pathlib import Path

import pytest

import assertdistill

PACKAGE = Path(assertdistill.__file__).parent
# The sub-packages from the bottom up; a package imports only from packages in lower layers (and itself).
LAYERS = [
    {"core", "java"},
    {"runtime", "codec", "model"},
    {"data", "scoring"},
    {"retrieval"},
    {"teacher"},
    {"distill"},
    {"analysis", "deploy"},
    {"execution"},
    {"commands"},
]
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}
MODULES = sorted(".".join(path.relative_to(PACKAGE).with_suffix("").parts) for path in PACKAGE.rglob("*.py")
                 if path.name != "__init__.py")
MAX_MODULES_PER_PACKAGE = 15


def _absolute(module: str, node: ast.ImportFrom) -> list[str]:
    """The dotted assertdistill names (package.module or package) an ImportFrom brings in."""
    if node.level:
        base = module.split(".")[: len(module.split(".")) - node.level]
        prefix = ".".join(base + ([node.module] if node.module else []))
    elif node.module and node.module.startswith("assertdistill"):
        prefix = node.module.removeprefix("assertdistill").lstrip(".")
    else:
        return []
    return [f"{prefix}.{alias.name}".strip(".") for alias in node.names] + [prefix]


def package_imports(module: str) -> set[str]:
    """The assertdistill modules `module` imports anywhere in its source (module level and inside functions)."""
    tree = ast.parse((PACKAGE / (module.replace(".", "/") + ".py")).read_text())
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.removeprefix("assertdistill.") for alias in node.names
                     if alias.name.startswith("assertdistill.")]
        elif isinstance(node, ast.ImportFrom):
            names = _absolute(module, node)
        else:
            continue
        for name in names:
            parts = name.split(".")
            for length in (2, 1):
                candidate = ".".join(parts[:length])
                if candidate in MODULES and candidate != module:
                    targets.add(candidate)
                    break
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


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """'a.x -> b.y' for each import of a package in the same or a higher layer than the importer's."""
    found = []
    for module, targets in graph.items():
        own = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != own and LAYER_OF[other] >= LAYER_OF[own]:
                found.append(f"{module} -> {target}")
    return sorted(found)


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(f"assertdistill.{module}")


def test_every_package_has_a_layer_and_few_modules():
    packages = {module.split(".")[0] for module in MODULES}
    assert packages - set(LAYER_OF) == set(), "add the new package to LAYERS (and docs/ARCHITECTURE.md)"
    assert all("." in module for module in MODULES), "modules live in sub-packages, not at the top"
    for package in packages:
        count = sum(module.startswith(package + ".") for module in MODULES)
        assert count <= MAX_MODULES_PER_PACKAGE, f"assertdistill/{package}/ holds {count} modules"


def test_no_import_cycle_in_the_package():
    graph = {module: package_imports(module) for module in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_packages_import_only_lower_layers():
    graph = {module: package_imports(module) for module in MODULES}
    assert layer_violations(graph) == []


def test_the_layer_check_finds_an_upward_import():
    graph = {"model.generation": {"distill.forward"}, "distill.forward": {"model.precision"}, "model.precision": set()}
    assert layer_violations(graph) == ["model.generation -> distill.forward"]


def test_relative_imports_resolve_to_modules(tmp_path):
    node = ast.parse("from ..distill import loss\nfrom .attention import X").body
    assert _absolute("model.generation", node[0])[0] == "distill.loss"
    assert _absolute("model.generation", node[1])[0] == "model.attention.X"


def test_the_cycle_finder_finds_a_hidden_cycle():
    assert find_cycle({"attention": {"models"}, "models": {"attention", "dropout"}, "dropout": set()}) == [
        "attention", "models", "attention"]
    assert find_cycle({"records": {"jsonline"}, "jsonline": {"codec"}, "codec": set()}) is None


def test_data_layer_does_not_import_the_loss():
    assert "distill.loss" not in package_imports("data.dataset")
    assert "model.models" not in package_imports("model.attention")
