"""Yu et al.'s adaptation of a retrieved assertion (ICSE 2022, "IR_ar"): its names and literals taken from the
retrieved test are replaced by the most similar ones of the current test.

A token of the retrieved assertion (identifier, number, string or char literal) is replaced when it occurs in
the retrieved test method but not in the current one: it named something of the retrieved test's context.
Its replacement is the token of the same kind of the current test's own context (in the current test method,
not in the retrieved one) most similar to it (difflib ratio; ties: the one nearest the placeholder, the last). Assertion names, Java keywords and tokens of neither
test (the focal API: size, getName, ...) are kept.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|[A-Za-z_$][A-Za-z0-9_$]*|\d+(?:\.\d+)?[fFdDlL]?')
_KEPT = {"null", "true", "false", "new", "this", "super", "instanceof", "class", "int", "long", "double", "float",
         "boolean", "char", "byte", "short", "void", "public", "private", "protected", "static", "final", "return",
         "if", "else", "for", "while", "do", "try", "catch", "finally", "throw", "throws", "var", "Test", "String",
         "Object", "Assert", "Assertions", "fail"}


def kind(token: str) -> str:
    """'string', 'char', 'number' or 'name'."""
    if token.startswith('"'):
        return "string"
    if token.startswith("'"):
        return "char"
    return "number" if token[0].isdigit() else "name"


def adapt_assertion(assertion: str, retrieved_test: str, test_method: str) -> str:
    """The retrieved assertion with the retrieved test's names and literals swapped for the current test's."""
    own = _TOKEN.findall(test_method)
    theirs = set(_TOKEN.findall(retrieved_test))
    own_set = set(own)
    replacements: dict[str, str] = {}
    for token in dict.fromkeys(_TOKEN.findall(assertion)):
        if token in _KEPT or token.startswith("assert") or token in own_set or token not in theirs:
            continue
        candidates = [candidate for candidate in own if kind(candidate) == kind(token) and candidate not in theirs
                      and candidate not in _KEPT and not candidate.startswith("assert")]
        if candidates:
            replacements[token] = max(reversed(candidates), key=lambda c: SequenceMatcher(None, token, c).ratio())
    if not replacements:
        return assertion
    return _TOKEN.sub(lambda match: replacements.get(match.group(0), match.group(0)), assertion)
