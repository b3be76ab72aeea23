"""A record's test method in its real test file: found by name, masked as make_dataset.py masks it, candidate put in."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tree_sitter import Node

from ..data.records import RecordError
from ..java.mining import PLACEHOLDER, assertion_statements, make_parser, mask_method, one_line, parse_test_file

_PACKAGE = re.compile(rb"^\s*package\s+([\w.]+)\s*;", flags=re.MULTILINE)
_CLASS_TYPES = ("class_declaration", "enum_declaration", "record_declaration", "interface_declaration")
_PARSER = make_parser()


class SourceError(RecordError):
    """The record's test cannot be located in its file (counted under `reason`)."""


@dataclass(frozen=True)
class MaskedTest:
    """The test file with the record's method masked: the text around the method and the masked method."""

    before: bytes  # the file up to the method's first line
    masked_method: str  # the method as the dataset masks it (every assertion a placeholder line)
    after: bytes  # the file after the method
    class_name: str  # binary name of the class declaring the method: pkg.Outer$Inner
    placeholders: int

    def with_candidate(self, candidate: str) -> str:
        """The file's text with the candidate's statements at the placeholders, in order.

        Statement k of the candidate goes to placeholder k; statements beyond the last placeholder go to
        the last one; placeholders left over stay masked (comments). A candidate that does not split into
        statements (garbage) goes whole to the first placeholder.
        """
        statements = [line for line in (candidate or "").splitlines() if line.strip()]
        if not statements:
            statements = [candidate or ""]
        pieces = self.masked_method.split(PLACEHOLDER)
        slots = len(pieces) - 1
        filled = statements
        if len(statements) > slots:
            filled = statements[:slots - 1] + ["\n".join(statements[slots - 1:])]
        method = pieces[0]
        for index, piece in enumerate(pieces[1:]):
            method += (filled[index] if index < len(filled) else PLACEHOLDER) + piece
        return (self.before + method.encode("utf-8") + self.after).decode("utf-8")


def _binary_class_name(source: bytes, method: Node) -> str:
    names = []
    node = method.parent
    while node is not None:
        if node.type in _CLASS_TYPES and node.child_by_field_name("name") is not None:
            names.append(node.child_by_field_name("name").text.decode("utf-8"))
        node = node.parent
    package = _PACKAGE.search(source)
    outer = "$".join(reversed(names))
    return f"{package.group(1).decode()}.{outer}" if package else outer


def _methods_named(root: Node, name: str) -> list[Node]:
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type == "method_declaration":
            name_node = node.child_by_field_name("name")
            if name_node is not None and name_node.text.decode("utf-8") == name:
                found.append(node)
        stack.extend(node.named_children)
    return sorted(found, key=lambda n: n.start_byte)


def mask_test(text: str, method_name: str, ground_truth: str) -> MaskedTest:
    """The file with method `method_name` masked; with several of that name, the one whose assertions are the
    ground truth (else the first). SourceError(method_not_found | no_assertions) otherwise."""
    parsed = parse_test_file(_PARSER, "", text)
    source = parsed.src
    methods = _methods_named(parsed.root, method_name)
    if not methods:
        raise SourceError("method_not_found", f"no method {method_name} in the test file")
    chosen = None
    for method in methods:
        body = method.child_by_field_name("body")
        statements = assertion_statements(body) if body is not None else []
        if chosen is None and statements:
            chosen = (method, statements)
        if "\n".join(one_line(s.text.decode("utf-8")) for s in statements) == ground_truth.strip():
            chosen = (method, statements)
            break
    if chosen is None:
        raise SourceError("no_assertions", f"method {method_name} has no assertion to mask")
    method, statements = chosen
    line_start = source.rfind(b"\n", 0, method.start_byte) + 1
    start = method.start_byte if source[line_start:method.start_byte].strip() else line_start
    masked = mask_method(source, method, statements)
    return MaskedTest(source[:start], masked, source[method.end_byte:], _binary_class_name(source, method),
                      masked.count(PLACEHOLDER))
