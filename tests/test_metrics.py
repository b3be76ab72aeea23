"""Thesis metric definitions, as data-driven cases."""

from difflib import SequenceMatcher

import pytest

from assertdistill.scoring.metrics import (
    MetricAccumulator,
    normalize_assertion,
    parses_as_java,
    split_assertions,
    strict_exact_match,
)
from assertdistill.scoring.registry import RECORD_METRICS, average_record_metrics, record_metrics
from script import evaluate_assertions_script1_style

# (generated block, reference block, exact matches, precision, recall, f1, accuracy)
CASES = [
    ("assertEquals(1, x);", "assertEquals(1, x);", 1, 1.0, 1.0, 1.0, 1.0),
    # The thesis masks assertEquals' first argument: different expected values still match.
    ("assertEquals(2, x);", "assertEquals(1, x);", 1, 1.0, 1.0, 1.0, 1.0),
    ("assertTrue(a);\nassertFalse(b);", "assertTrue(a);", 1, 0.5, 1.0, 2 / 3, 0.5),
    ("assertTrue(a)", "assertTrue(a);", 1, 1.0, 1.0, 1.0, 1.0),  # re-terminated with ';'
    ("assertNull(  a  );", "assertNull( a );", 1, 1.0, 1.0, 1.0, 1.0),  # whitespace normalized
    # The thesis lowercases only an `assert` prefix and keeps the rest of the name as typed.
    ("ASSERTTRUE(a);", "assertTrue(a);", 0, 0.0, 0.0, 0.0, 0.0),
    ("ASSERTTRUE(a);", "assertTRUE(a);", 1, 1.0, 1.0, 1.0, 1.0),
    ("AssertNotNull(a);", "assertNotNull(a);", 1, 1.0, 1.0, 1.0, 1.0),
    ("assertnotnull(a);", "assertNotNull(a);", 0, 0.0, 0.0, 0.0, 0.0),
    # The VALUE rewrite runs first and only on assertEquals spelled so.
    ("assertequals(1, x);", "assertequals(2, x);", 0, 0.0, 0.0, 0.0, 0.0),
    ("ASSERTEQUALS(1, x);", "assertEquals(2, x);", 0, 0.0, 0.0, 0.0, 0.0),
    ("assertEquals(1,x);", "assertEquals( 2 ,x);", 1, 1.0, 1.0, 1.0, 1.0),
    ("assertEquals(1, x );", "assertEquals(1, x);", 0, 0.0, 0.0, 0.0, 0.0),  # the space before ')' is kept
    # Only assertEquals' first argument is masked: another assertion's message argument still counts.
    ('assertTrue("a", ok);', 'assertTrue("b", ok);', 0, 0.0, 0.0, 0.0, 0.0),
    ('assertNotNull("a", x);', 'assertNotNull("b", x);', 0, 0.0, 0.0, 0.0, 0.0),
    ("assertTrue(a); assertTrue(b);", "assertTrue(a);\nassertTrue(b);", 2, 1.0, 1.0, 1.0, 1.0),  # split on ';'
    ("", "assertTrue(a);", 0, 0.0, 0.0, 0.0, 0.0),
    ("assertTrue(a);", "", 0, 0.0, 0.0, 0.0, 0.0),
    ("", "", 0, 1.0, 1.0, 1.0, 1.0),  # both empty
    ("fail();", "assertTrue(a);", 0, 0.0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("generated, reference, matches, precision, recall, f1, accuracy", CASES)
def test_script1_cases(generated, reference, matches, precision, recall, f1, accuracy):
    result = evaluate_assertions_script1_style(generated, reference)
    assert result["exact_matches_script1"] == matches
    assert result["precision_script1"] == pytest.approx(precision)
    assert result["recall_script1"] == pytest.approx(recall)
    assert result["f1_script1"] == pytest.approx(f1)
    assert result["accuracy_script1"] == pytest.approx(accuracy)


def test_similarity_is_mean_of_best_difflib_ratio_per_generated_item():
    generated, reference = "assertTrue(abc);\nassertNull(q);", "assertTrue(abd);\nassertFalse(z);"
    result = evaluate_assertions_script1_style(generated, reference)
    refs = ["assertTrue(abd);", "assertFalse(z);"]
    best = [max(SequenceMatcher(None, item, ref).ratio() for ref in refs) for item in ("assertTrue(abc);", "assertNull(q);")]
    assert result["similarity_scores_list_script1"] == pytest.approx(best)
    assert result["similarity_avg_script1"] == pytest.approx(sum(best) / 2)
    assert result["gen_type_counts_script1"] == {"truth": 1, "null": 1}
    assert result["ref_type_counts_script1"] == {"truth": 1, "falsity": 1}


def test_empty_generation_against_reference_has_zero_similarity():
    assert evaluate_assertions_script1_style("", "assertTrue(a);")["similarity_avg_script1"] == 0.0


def test_non_string_blocks_are_empty():
    assert split_assertions(None) == [] and split_assertions(["a"]) == []


@pytest.mark.parametrize("raw, normalized", [
    ("assertEquals( 5 ,  foo.bar() );", "assertEquals(VALUE, foo.bar() );"),
    ("assertnotnull(x);", "assertnotnull(x);"),  # the name's case kept: "assert" + "notnull"
    ("ASSERTTRUE(x);", "assertTRUE(x);"),
    ("ASSERTEQUALS(1, x);", "assertEQUALS(1, x);"),  # no VALUE: the rewrite only knows assertEquals
    ("assertTrueish(x);", "assertTrueish(x);"),  # not a known name (\b)
    ("  assertThat(a)\t.isEqualTo( b ) ;", "assertThat(a) .isEqualTo( b ) ;"),
])
def test_normalization_steps(raw, normalized):
    assert normalize_assertion(raw) == normalized


def test_blocks_split_on_newlines_and_similarity_compares_normalized_items():
    result = evaluate_assertions_script1_style("assertEquals(1,   x)\nassertTrue(a)", "assertEquals(2, x);")
    assert result["generated_count_script1"] == 2 and result["reference_count_script1"] == 1
    # Normalized, the first item equals the reference ("assertEquals(VALUE, x);"): similarity 1, not the
    # difflib ratio of the raw items; the second item's best ratio is against that normalized reference.
    second = SequenceMatcher(None, "assertTrue(a);", "assertEquals(VALUE, x);").ratio()
    assert result["similarity_scores_list_script1"] == [1.0, second]
    assert SequenceMatcher(None, "assertEquals(1,   x);", "assertEquals(2, x);").ratio() < 1.0


STUDENT_AND_TEACHER = [m.key for m in RECORD_METRICS if m.pair.prediction != "retrieval"]


def test_list_valued_teacher_prediction_scores_as_the_thesis_read_it():
    student = "assertEquals(expected, actual);"
    values = record_metrics(student, "assertTrue(ok);", teacher="assertEquals(expected, actual);",
                            teacher_script1=str(["assertEquals(expected, actual);"]))
    assert values["accuracy_s_vs_t_script1"] == 0.0  # compared with "['assertEquals(expected, actual);']"
    assert values["similarity_avg_s_vs_t_script1"] == pytest.approx(0.966, abs=5e-4)
    assert values["accuracy_s_vs_t_corrected"] == values["similarity_avg_s_vs_t_corrected"] == 1.0
    assert values["strict_exact_match_s_vs_t"] == 1.0
    assert values["accuracy_s_vs_gt_script1"] == values["accuracy_t_vs_gt_script1"] == 0.0
    assert list(values) == STUDENT_AND_TEACHER  # no retrieval text given: no retrieval metric


def test_record_metric_averages_are_means_in_order():
    rows = [record_metrics(student, "assertTrue(a);", "assertTrue(a);", "['assertTrue(a);']")
            for student in ("assertTrue(a);", "assertTrue(b);", "assertTrue(a);")]
    averages = average_record_metrics(rows)
    assert set(averages) == {f"avg_{name}" for name in STUDENT_AND_TEACHER}
    assert averages["avg_accuracy_s_vs_gt_script1"] == averages["avg_accuracy_s_vs_t_corrected"] == 2 / 3
    assert averages["avg_accuracy_s_vs_t_script1"] == 0.0 and averages["avg_accuracy_t_vs_gt_script1"] == 1.0
    assert all(value is None for value in average_record_metrics([]).values())


def test_strict_exact_match_does_not_mask_values():
    assert strict_exact_match("assertEquals(2, x);", "assertEquals(1, x);") == 0.0
    assert strict_exact_match("assertEquals(1,  x);", "assertEquals(1, x);") == 1.0
    assert strict_exact_match("", "") == 1.0


def test_accumulator_averages_with_thesis_key_names():
    accumulator = MetricAccumulator("s_vs_gt")
    accumulator.add("assertTrue(a);", "assertTrue(a);")
    accumulator.add("assertTrue(b);", "assertTrue(a);")
    averages = accumulator.averages()
    assert averages["avg_accuracy_s_vs_gt_script1"] == 0.5
    assert set(averages) == {f"avg_{m}_s_vs_gt_script1" for m in ("precision", "recall", "f1", "accuracy",
                                                                 "similarity_avg")} | {"avg_strict_exact_match_s_vs_gt"}


@pytest.mark.parametrize("block, expected", [
    ("assertEquals(1, list.size());", 1.0),
    ("assertEquals(expected, actual);", 1.0),  # syntax only: undeclared names still parse
    ("fail();\nassertTrue(x);", 1.0),
    ("assertThat(0, 1, 1, 1", 0.0),  # the looping student's unterminated call
    ("assertEquals(1, x)", 0.0),  # no semicolon
    ("", 0.0), ("   ", 0.0), ("// only a comment", 0.0), (None, 0.0),
])
def test_parses_as_java(block, expected):
    assert parses_as_java(block) == expected

