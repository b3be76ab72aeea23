"""Find `// <ASSERTION_PLACEHOLDER>` lines in a Java test file, build each method's model input, write assertions back.

The model input of a method is the one training and evaluation use (docs/DATA_FORMAT.md): the method's
source as java_mining.mask_method writes test_method_masked, and the focal class found by the dataset's
rules (java_mining.find_focal) in a source tree. The student writes all of a method's assertions as
lines of one output (the training target is the assertions joined by newlines): line i goes to the
method's placeholder i, lines beyond the last placeholder go below it, and a placeholder with no line
left is kept as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tree_sitter import Node

from .mining import (
    PLACEHOLDER,
    MiningStats,
    ParsedFile,
    RepoIndex,
    assertion_statements,
    find_focal,
    make_parser,
    mask_method,
    mask_span,
    parse_test_file,
    test_kind,
)

STATEMENT_WRAPPER = ("class A { void m() {\n", "\n} }\n")  # a statement parses inside a method body


class JavaInputError(ValueError):
    """A file that cannot be given assertions: not Java, does not parse, no placeholder."""


@dataclass
class MethodSite:
    """One method holding placeholders: its model input and where its placeholder lines are."""

    name: str  # Class.method
    top_level: str  # the top-level class the focal class is looked up for
    test_method_masked: str
    lines: list[int]  # 0-based line numbers of its placeholder lines, in order
    indents: list[str]
    focal_code: str = ""
    focal_path: str | None = None


@dataclass
class JavaTestFile:
    """A test file's text (placeholders in place) and its methods with placeholders."""

    path: str
    text: str
    parsed: ParsedFile
    sites: list[MethodSite] = field(default_factory=list)
    outside_methods: int = 0  # placeholder lines not inside a method body (left alone)


def _first_error_line(node: Node) -> int:
    """1-based line of the first ERROR or missing node below `node`."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "ERROR" or current.is_missing:
            return current.start_point[0] + 1
        stack.extend(reversed([child for child in current.children if child.has_error or child.is_missing]))
    return node.start_point[0] + 1


def parse_java(path: str, text: str) -> ParsedFile:
    """Parse a test file with tree-sitter; JavaInputError naming the first error's line when it does not parse."""
    parsed = parse_test_file(make_parser(), os.path.basename(path), text)
    if parsed.root.has_error:
        raise JavaInputError(f"{path}: does not parse as Java (tree-sitter: first error at line "
                             f"{_first_error_line(parsed.root)})")
    return parsed


def _methods(parsed: ParsedFile) -> list[tuple[object, Node]]:
    """(class, method_declaration) of every method with a body, in file order."""
    found = [(cls, node) for cls in parsed.classes for node in cls.body.named_children
             if node.type == "method_declaration" and node.child_by_field_name("body") is not None]
    return sorted(found, key=lambda pair: pair[1].start_byte)


def mask_existing_assertions(path: str, text: str) -> str:
    """The file with every test method's assertion statements replaced by placeholders, as the dataset masks them."""
    parsed = parse_java(path, text)
    statements = []
    for cls, method in _methods(parsed):
        junit3 = bool(cls.superclass and cls.superclass.endswith("TestCase"))
        if test_kind(method, junit3):
            statements += assertion_statements(method.child_by_field_name("body"))
    statements.sort(key=lambda node: node.start_byte)
    return mask_span(parsed.src, 0, len(parsed.src), statements).decode("utf-8")


def _placeholder_comments(root: Node) -> list[Node]:
    """Every line comment whose text is the placeholder."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type == "line_comment" and node.text.decode("utf-8").strip() == PLACEHOLDER:
            found.append(node)
        stack.extend(node.children)
    return sorted(found, key=lambda node: node.start_byte)


def find_placeholders(path: str, text: str) -> JavaTestFile:
    """The methods of a test file that hold placeholder lines; JavaInputError when there is none."""
    parsed = parse_java(path, text)
    lines = text.split("\n")
    comments = _placeholder_comments(parsed.root)
    result = JavaTestFile(path, text, parsed)
    used = set()
    for cls, method in _methods(parsed):
        inside = [c for c in comments if method.start_byte <= c.start_byte < method.end_byte]
        if not inside:
            continue
        rows = [c.start_point[0] for c in inside]
        site = MethodSite(f"{cls.name}.{method.child_by_field_name('name').text.decode('utf-8')}", cls.top_level,
                          mask_method(parsed.src, method, []), rows,
                          [lines[row][:len(lines[row]) - len(lines[row].lstrip())] for row in rows])
        for comment, row in zip(inside, rows):
            if lines[row].strip() != PLACEHOLDER:
                raise JavaInputError(f"{path}:{row + 1}: a placeholder must be alone on its line")
            used.add(comment.start_byte)
        result.sites.append(site)
    result.outside_methods = sum(1 for c in comments if c.start_byte not in used)
    if not result.sites:
        raise JavaInputError(f"{path}: no '{PLACEHOLDER}' line in a method (--mask_existing masks the "
                             f"assertions of test methods first)")
    return result


def infer_source_root(test_path: str) -> str | None:
    """The production tree of a Maven/Gradle test file: .../src/test/java/... -> .../src/main/java (if it exists)."""
    parts = Path(os.path.abspath(test_path)).parts
    for index in range(len(parts) - 3, -1, -1):
        if parts[index:index + 3] == ("src", "test", "java"):
            root = Path(*parts[:index], "src", "main", "java")
            return str(root) if root.is_dir() else None
    return None


def _package_relative(test_path: str, parsed: ParsedFile) -> str:
    """The test file's path below its source tree (package dirs + file name), as the focal ranking compares it."""
    name = os.path.basename(test_path)
    return f"{parsed.package_dir}/{name}" if parsed.package_dir else name


class FocalFinder:
    """Focal classes by the dataset's rules, one RepoIndex per source root (built once)."""

    def __init__(self):
        self._indexes: dict[str, RepoIndex] = {}

    def index(self, root: str) -> RepoIndex:
        """The index of every .java file below root."""
        if root not in self._indexes:
            self._indexes[root] = RepoIndex(Path(root), os.path.basename(root), (), MiningStats())
        return self._indexes[root]

    def attach(self, test_file: JavaTestFile, source_root: str | None) -> None:
        """Set each site's focal code and path ("" and None when no focal class is found)."""
        if source_root is None:
            return
        index = self.index(source_root)
        parsed = test_file.parsed
        located = ParsedFile(_package_relative(test_file.path, parsed), parsed.src, parsed.root, parsed.package_dir,
                             parsed.classes)
        refs_cache: dict = {}
        for site in test_file.sites:
            path, _ = find_focal(index, located, site.top_level, refs_cache)
            if path is not None:
                site.focal_path = os.path.join(source_root, path)
                site.focal_code = index.focal_text(path)


def split_assertions(text: str) -> list[str]:
    """The non-empty lines of a generated output, stripped."""
    return [line.strip() for line in text.split("\n") if line.strip()]


def place_assertions(site: MethodSite, assertions: list[str]) -> list[list[str]]:
    """Lines for each placeholder: one assertion each in order, the rest under the last; [] keeps a placeholder."""
    count = len(site.lines)
    placed = [[line] for line in assertions[:count - 1]]
    placed.append(assertions[count - 1:])
    placed += [[] for _ in range(count - len(placed))]
    return placed[:count]


def rewrite(text: str, replacements: dict[int, list[str]], indents: dict[int, str]) -> str:
    """The text with line i replaced by replacements[i], each at indents[i] (an empty list keeps the line)."""
    lines = text.split("\n")
    out = []
    for row, line in enumerate(lines):
        new = replacements.get(row)
        out.extend([indents[row] + item for item in new] if new else [line])
    return "\n".join(out)


def parses_as_statement(code: str) -> bool:
    """True when tree-sitter parses `code` as one or more Java statements inside a method body."""
    source = (STATEMENT_WRAPPER[0] + code + STATEMENT_WRAPPER[1]).encode("utf-8")
    return not make_parser().parse(source).root_node.has_error
