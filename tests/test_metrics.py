"""Thesis metric definitions, as data-driven cases."""

from difflib import SequenceMatcher

import pytest

from assertdistill.metrics import MetricAccumulator, normalize_assertion, strict_exact_match, split_assertions
from script import evaluate_assertions_script1_style

# (generated block, reference block, exact matches, precision, recall, f1, accuracy)
CASES = [
    ("assertEquals(1, x);", "assertEquals(1, x);", 1, 1.0, 1.0, 1.0, 1.0),
    # The thesis masks assertEquals' first argument: different expected values still match.
    ("assertEquals(2, x);", "assertEquals(1, x);", 1, 1.0, 1.0, 1.0, 1.0),
    ("assertTrue(a);\nassertFalse(b);", "assertTrue(a);", 1, 0.5, 1.0, 2 / 3, 0.5),
    ("assertTrue(a)", "assertTrue(a);", 1, 1.0, 1.0, 1.0, 1.0),  # re-terminated with ';'
    ("assertNull(  a  );", "assertNull( a );", 1, 1.0, 1.0, 1.0, 1.0),  # whitespace normalized
    ("ASSERTTRUE(a);", "assertTrue(a);", 1, 1.0, 1.0, 1.0, 1.0),  # canonical case
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


def test_normalization_steps():
    assert normalize_assertion("assertEquals( 5 ,  foo.bar() );") == "assertEquals(VALUE, foo.bar() );"
    assert normalize_assertion("assertnotnull(x);") == "assertNotNull(x);"


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
