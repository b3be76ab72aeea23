"""The thesis's assertion metrics ("script1": precision, recall, F1, accuracy, similarity); whether a block parses.

Which of them an evaluation computes, on which texts, is declared in registry.py.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import Any

import numpy as np

from ..core.schema import (
    SCRIPT1_AVERAGED,
    avg,
    metric_key,
    script1,
    script1_result_key,
    strict_key,
)
from ..java.mining import make_parser

ASSERT_NAMES = "Equals|That|True|False|Null|NotNull|Throws|Same|NotSame|ArrayEquals"
_WHITESPACE = re.compile(r"\s+")
_ASSERT_EQUALS_EXPECTED = re.compile(r"assertEquals\s*\(\s*[^,]+,\s*([^)]+)\s*\)")
_ASSERT_NAME = re.compile(rf"assert({ASSERT_NAMES})\b", flags=re.IGNORECASE)
_SPLIT_ITEMS = re.compile(r";|\n")

# (type name, pattern searched in the lower-cased assertion), first match wins, as the thesis.
_TYPE_RULES = [
    ("truth", re.compile(r"\basserttrue\b")),
    ("falsity", re.compile(r"\bassertfalse\b")),
    ("null", re.compile(r"\bassertnull\b")),
    ("not_null", re.compile(r"\bassertnotnull\b")),
    ("exception", re.compile(r"\bassertthrows\b")),
    ("same", re.compile(r"\bassertsame\b")),
    ("not_same", re.compile(r"\bassertnotsame\b")),
    ("array_equality", re.compile(r"\bassertarrayequals\b")),
]
_EQUALS = re.compile(r"\bassertequals\b")
_THAT = re.compile(r"\bassertthat\b")


def split_assertions(block: Any) -> list[str]:
    """Split a block on ';' and newlines; each non-empty item stripped and re-terminated with ';'."""
    if not block or not isinstance(block, str):
        return []
    items = (item.strip() for item in _SPLIT_ITEMS.split(block))
    return [item if item.endswith(";") else item + ";" for item in items if item]


def normalize_assertion(assertion: str) -> str:
    """Thesis normalization: collapse whitespace, mask assertEquals' first argument, lowercase an `assert` prefix.

    As in the thesis, the VALUE rewrite runs first and only on `assertEquals` spelled so, and only the
    `assert` prefix of a known name is lowercased: ASSERTTRUE becomes assertTRUE, not assertTrue.
    """
    assertion = _WHITESPACE.sub(" ", assertion).strip()
    assertion = _ASSERT_EQUALS_EXPECTED.sub(r"assertEquals(VALUE, \1)", assertion)
    return _ASSERT_NAME.sub(r"assert\1", assertion)


def normalize_whitespace(assertion: str) -> str:
    """Strict normalization: whitespace runs collapsed, nothing else."""
    return _WHITESPACE.sub(" ", assertion).strip()


def similarity(reference: str, candidate: str) -> float:
    """difflib ratio of two strings; 0.0 when either is empty or not a string."""
    if not isinstance(reference, str) or not isinstance(candidate, str) or not reference or not candidate:
        return 0.0
    return SequenceMatcher(None, reference, candidate).ratio()


def classify_assertion(assertion: str) -> str:
    """Assertion type as the thesis counts them (equality, truth, ..., other)."""
    if not isinstance(assertion, str):
        return "other"
    lowered = assertion.lower()
    if _EQUALS.search(lowered) or (_THAT.search(lowered) and ".isequalto" in lowered):
        return "equality"
    for type_name, pattern in _TYPE_RULES:
        if pattern.search(lowered):
            return type_name
    return "other"


def _type_counts(assertions: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for assertion in assertions:
        type_name = classify_assertion(assertion)
        counts[type_name] = counts.get(type_name, 0) + 1
    return counts


def strict_exact_match(generated_block: Any, reference_block: Any) -> float:
    """Share of items matched exactly after whitespace normalization: matches / max(counts)."""
    generated = [normalize_whitespace(item) for item in split_assertions(generated_block)]
    reference = [normalize_whitespace(item) for item in split_assertions(reference_block)]
    if not generated and not reference:
        return 1.0
    matches = sum(1 for item in generated if item in reference)
    return matches / max(len(generated), len(reference))


def evaluate_assertions_script1_style(generated_assertions_block: Any, reference_assertions_block: Any) -> dict:
    """Compare two assertion blocks with the thesis definitions; returns the *_script1 metric dict."""
    generated_raw = split_assertions(generated_assertions_block)
    reference_raw = split_assertions(reference_assertions_block)
    generated = [normalize_assertion(item) for item in generated_raw]
    reference = [normalize_assertion(item) for item in reference_raw]
    exact_matches = sum(1 for item in generated if item in reference)
    similarity_scores = [max((similarity(item, ref) for ref in reference), default=0.0) for item in generated]

    if not generated and not reference:
        precision = recall = f1 = accuracy = similarity_avg = 1.0
    else:
        precision = exact_matches / len(generated) if generated else 0.0
        recall = exact_matches / len(reference) if reference else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        accuracy = exact_matches / max(len(generated), len(reference))
        similarity_avg = sum(similarity_scores) / len(similarity_scores) if similarity_scores else 0.0
    averaged = dict(zip(SCRIPT1_AVERAGED, (precision, recall, f1, accuracy, similarity_avg)))
    return {
        "exact_matches_script1": exact_matches,
        "generated_count_script1": len(generated),
        "reference_count_script1": len(reference),
        **{script1_result_key(name): value for name, value in averaged.items()},
        "gen_type_counts_script1": _type_counts(generated_raw),
        "ref_type_counts_script1": _type_counts(reference_raw),
        "similarity_scores_list_script1": similarity_scores,
    }


class MetricAccumulator:
    """Collects per-sample script1 metrics for one comparison (e.g. s_vs_gt) and averages them."""

    def __init__(self, comparison: str):
        self.comparison = comparison
        self.values: dict[str, list[float]] = {name: [] for name in SCRIPT1_AVERAGED}
        self.strict: list[float] = []

    def add(self, generated: str, reference: str) -> dict:
        """Score one pair and keep its numbers; returns the per-sample metric dict."""
        result = evaluate_assertions_script1_style(generated, reference)
        for name in SCRIPT1_AVERAGED:
            self.values[name].append(result[script1_result_key(name)])
        self.strict.append(strict_exact_match(generated, reference))
        return result

    def __len__(self) -> int:
        return len(self.strict)

    def averages(self) -> dict[str, float]:
        """avg_<metric>_<comparison>_script1 for each metric, plus avg_strict_exact_match_<comparison>.

        Each is None when no pair was scored (e.g. no record carries the teacher's prediction).
        """
        averages = {metric_key(name, script1(self.comparison)): float(np.mean(values)) if values else None
                    for name, values in self.values.items()}
        averages[avg(strict_key(self.comparison))] = float(np.mean(self.strict)) if self.strict else None
        return averages


_STATEMENT_WRAPPER = ("class AssertionCheck { void check() {\n", "\n} }")
_PARSER = make_parser()


def parses_as_java(block: Any) -> float:
    """1.0 when the block is one or more Java statements that parse as a method body (tree-sitter), else 0.0.

    Syntax only: names and types are not resolved (an undeclared variable parses). Empty text is 0.0.
    """
    if not isinstance(block, str) or not block.strip():
        return 0.0
    prefix, suffix = _STATEMENT_WRAPPER
    tree = _PARSER.parse((prefix + block + suffix).encode("utf-8"))
    if tree.root_node.has_error:
        return 0.0
    body = tree.root_node.named_children[0].child_by_field_name("body").named_children[0].child_by_field_name("body")
    return 1.0 if any(child.type != "line_comment" and child.type != "block_comment"
                      for child in body.named_children) else 0.0
