"""Intervals, paired tests (sign flips, McNemar) and their error rates on data with a known truth, n = 1 and up."""

import numpy as np
import pytest

from assertdistill.scoring.statistics import (
    BOUNDED_DIFFERENCE,
    DEFAULT_PERMUTATIONS,
    EXACT_MAX_NONZERO,
    PAIRED_BOOTSTRAP,
    SIGN_FLIP_MONTE_CARLO,
    bootstrap_mean_ci,
    bootstrap_means,
    bounded_mean_ci,
    mcnemar_exact,
    paired_difference_ci,
    paired_test,
    score_mean_ci,
    seeds_then_records_ci,
    sign_flip_test,
    wilson_ci,
)


def test_interval_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_rate, records, sweeps = 0.3, 300, 150
    covered = 0
    for sweep in range(sweeps):
        scores = (rng.random(records) < true_rate).astype(float)
        low, high = bootstrap_mean_ci(scores, resamples=1000, seed=sweep)
        covered += low <= true_rate <= high
    assert 0.90 <= covered / sweeps <= 0.99


def test_planted_difference_is_significant_and_null_difference_mostly_is_not():
    rng = np.random.default_rng(2)
    records = 400
    reference = (rng.random(records) < 0.30).astype(float)
    better = reference.copy()
    flip = rng.choice(np.flatnonzero(reference == 0), size=40, replace=False)  # +10 points on the same records
    better[flip] = 1.0
    result = paired_test(better, reference)
    assert result.difference == pytest.approx(0.10)
    assert result.ci_low > 0 and result.p_value < 0.05 and result.test == SIGN_FLIP_MONTE_CARLO
    assert result.ci_method == PAIRED_BOOTSTRAP and result.records == records
    assert paired_test(better, reference, binary=True).p_value == mcnemar_exact(better == 1, reference == 1)

    false_positives, repeats = 0, 100
    for repeat in range(repeats):
        same_rate = (rng.random(records) < 0.30).astype(float)
        other = (rng.random(records) < 0.30).astype(float)
        false_positives += paired_test(other, same_rate, binary=True).p_value < 0.05
    assert false_positives / repeats <= 0.11  # 5% expected; binomial spread over 100 repeats


# (id, differences, exact two-sided sign-flip p value counted by hand)
SIGN_FLIPS = [
    ("one_record", [0.3], 1.0),  # both signs give |sum| 0.3
    ("five_equal", [1.0] * 5, 2 / 32),  # the exact sign test of the issue
    ("five_equal_fractions", [0.2] * 5, 2 / 32),
    ("six_equal", [0.5] * 6, 2 / 64),
    ("all_zero", [0.0] * 50, 1.0),
    ("zeros_carry_no_sign", [0.0] * 100 + [1.0] * 5, 2 / 32),
    ("mixed", [1.0, 1.0, -1.0], 1.0),  # sums +-1 and +-3: |sum| >= 1 always
    ("unequal", [0.5, 0.25, 0.125], 2 / 8),  # only all-positive and all-negative reach |0.875|
]


@pytest.mark.parametrize("differences,expected", [c[1:] for c in SIGN_FLIPS], ids=[c[0] for c in SIGN_FLIPS])
def test_sign_flip_p_values_are_exact_for_few_records(differences, expected):
    assert sign_flip_test(differences) == (pytest.approx(expected), True)


def test_monte_carlo_sign_flips_agree_with_the_exact_count_and_never_reach_zero():
    differences = [1.0] * 20  # exact p = 2 / 2**20, far below what 4999 permutations can show
    p_value, exact = sign_flip_test(differences)
    assert not exact and p_value == 1 / (DEFAULT_PERMUTATIONS + 1)
    rng = np.random.default_rng(8)
    values = rng.normal(0.05, 1.0, 14)
    exact_p = sign_flip_test(values[:EXACT_MAX_NONZERO])[0]
    sampled = sign_flip_test(np.r_[values[:EXACT_MAX_NONZERO], 0, 0])  # zeros: same exact p
    assert sampled == (pytest.approx(exact_p), True)
    many = np.tile(values[:EXACT_MAX_NONZERO], 2)
    columns, _ = sign_flip_test(np.column_stack([many, many * 2, np.r_[many[:-1], np.nan]]))
    assert columns[0] == columns[1] and 0 < columns[2] <= 1  # scale-free; NaN records left out


@pytest.mark.parametrize("kind", ["binary", "graded", "constant"])
def test_false_positive_rate_stays_below_the_level_for_every_n_from_1_to_20(kind):
    """Null sweeps: both runs' scores from one distribution (graded, binary) or one run minus itself plus a
    constant that is drawn with a random sign (constant differences); p < 0.05 at most 5% of the time."""
    rng = np.random.default_rng(11)
    repeats = 150
    for n in range(1, 21):
        rejections = 0
        for repeat in range(repeats):
            if kind == "binary":
                run, reference = (rng.random((2, n)) < 0.4).astype(float)
            elif kind == "graded":
                run, reference = rng.beta(2, 3, (2, n))
            else:
                reference = rng.random(n) * 0.5
                run = reference + 0.25 * rng.choice([-1.0, 1.0], n)
            result = paired_test(run, reference, binary=kind == "binary", seed=repeat)
            rejections += result.p_value < 0.05
            assert result.ci_high > result.ci_low  # never a zero-width interval
        assert rejections / repeats <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / repeats), (kind, n)
        if n < 6:  # 2 / 2**n > 0.05: no test can be significant on so few records
            assert rejections == 0, (kind, n)


def test_constant_differences_get_the_exact_p_value_and_an_honest_interval():
    for n in (1, 5, 20, 300):
        result = paired_test(np.full(n, 0.6), np.full(n, 0.4))
        assert result.difference == pytest.approx(0.2)
        assert result.p_value == pytest.approx(max(2 / 2 ** n, 1 / (DEFAULT_PERMUTATIONS + 1)) if n > 1 else 1.0)
        assert result.ci_method == BOUNDED_DIFFERENCE  # no spread: the bootstrap is not trusted
        assert result.ci_low < 0.2 < result.ci_high


@pytest.mark.parametrize("true_rate", [0.02, 0.3, 0.5, 0.9])
def test_interval_of_a_score_covers_the_truth_at_every_n_from_1_to_20(true_rate):
    rng = np.random.default_rng(12)
    repeats, covered = 200, []
    for n in range(1, 21):
        hits = 0
        for repeat in range(repeats):
            scores = (rng.random(n) < true_rate).astype(float)
            low, high = score_mean_ci(scores, seed=repeat)
            wilson_low, wilson_high = wilson_ci(scores.mean(), n)
            assert low <= wilson_low + 1e-12 and high >= wilson_high - 1e-12  # the Wilson floor
            hits += low <= true_rate <= high
        covered.append(hits / repeats)
    assert min(covered) >= 0.85 and np.mean(covered) >= 0.93, covered


def test_score_interval_never_narrower_than_wilson_and_never_zero_width():
    assert score_mean_ci(np.zeros(300)) == pytest.approx((0.0, 1.959964 ** 2 / (300 + 1.959964 ** 2)), rel=1e-5)
    assert score_mean_ci(np.zeros(300))[1] == pytest.approx(0.0126, abs=1e-4)  # the issue's [0, 0.0126]
    low, high = score_mean_ci(np.ones(40))
    assert high == 1.0 and low < 0.95
    constant = np.full((400, 2), 0.5)
    low, high = score_mean_ci(constant)
    assert np.all(high - low > 0.09)  # Wilson at 0.5 over 400 records: +-0.049
    scores = np.random.default_rng(13).random(500)  # the hull of the bootstrap and the Wilson interval
    (low, high), (boot_low, boot_high) = score_mean_ci(scores), bootstrap_mean_ci(scores)
    wilson_low, wilson_high = wilson_ci(scores.mean(), 500)
    assert (low, high) == pytest.approx((min(boot_low, wilson_low), max(boot_high, wilson_high)))
    wide = score_mean_ci(np.r_[np.ones(3), np.zeros(7)])  # few records: the conservative interval
    assert wide == bounded_mean_ci(0.3, 10)


@pytest.mark.parametrize("kind", ["graded", "binary"])
def test_conservative_interval_contains_the_bootstrap_interval(kind):
    rng = np.random.default_rng(3)
    for records in (50, 300, 1000):
        scores = rng.beta(2, 5, records) if kind == "graded" else (rng.random(records) < 0.28).astype(float)
        low, high = bootstrap_mean_ci(scores)
        wide_low, wide_high = bounded_mean_ci(float(scores.mean()), records)
        slack = 1.0 / records if kind == "binary" else 0.0  # bootstrap means of 0/1 scores move in steps of 1/N
        assert wide_low <= low + slack and high <= wide_high + slack


def test_bounded_interval_never_collapses_at_the_ends_and_is_at_least_the_normal_one():
    low, high = bounded_mean_ci(0.0, 1000)
    assert low == 0.0 and high == pytest.approx(1.959964 ** 2 / (1000 + 1.959964 ** 2), rel=1e-5)  # Wilson
    low, high = bounded_mean_ci(1.0, 10)
    assert high == 1.0 and low < 0.8
    low, high = bounded_mean_ci(0.28, 1000)
    normal = 1.959964 * np.sqrt(0.28 * 0.72 / 1000)
    assert low <= 0.28 - normal + 1e-9 and high >= 0.28 + normal - 1e-9
    assert high - low < 2 * normal * 1.05
    with pytest.raises(ValueError):
        bounded_mean_ci(1.5, 10)


@pytest.mark.parametrize("only_run, only_reference, both, expected", [
    (0, 5, 10, 2 / 32),
    (1, 9, 0, 2 * 11 / 1024),
    (4, 4, 3, 1.0),
    (0, 0, 7, 1.0),
])
def test_mcnemar_exact_against_hand_computed_binomial_tails(only_run, only_reference, both, expected):
    run = [True] * only_run + [False] * only_reference + [True] * both
    reference = [False] * only_run + [True] * only_reference + [True] * both
    assert mcnemar_exact(run, reference) == pytest.approx(expected)


def test_mcnemar_handles_thousands_of_discordant_pairs():
    run = np.r_[np.ones(3000, bool), np.zeros(2600, bool)]
    reference = ~run
    assert 0 < mcnemar_exact(run, reference) < 1e-4


def test_same_seed_same_interval_and_columns_match_single_metric_calls():
    rng = np.random.default_rng(4)
    scores = rng.random((200, 3))
    low, high = bootstrap_mean_ci(scores, seed=7)
    for column in range(3):  # same resamples for every column (the sums differ only in rounding)
        assert (low[column], high[column]) == pytest.approx(bootstrap_mean_ci(scores[:, column], seed=7), abs=1e-12)
    assert bootstrap_mean_ci(scores[:, 0], seed=7) == bootstrap_mean_ci(scores[:, 0].copy(), seed=7)


def test_seeds_then_records_pools_the_spread_over_seeds():
    rng = np.random.default_rng(5)
    seed_a = (rng.random(300) < 0.20).astype(float)
    seed_b = (rng.random(300) < 0.40).astype(float)
    assert seeds_then_records_ci([seed_a]) == bootstrap_mean_ci(seed_a)
    low, high = seeds_then_records_ci([seed_a, seed_b])
    pooled_low, pooled_high = bootstrap_mean_ci(np.r_[seed_a, seed_b])  # records only, seeds ignored
    assert high - low > 1.5 * (pooled_high - pooled_low)  # the seed-to-seed spread widens it
    assert low < seed_a.mean() < seed_b.mean() < high


def test_ten_thousand_records_and_twenty_metrics_in_one_call():
    scores = np.random.default_rng(6).random((10_000, 20))
    low, high = bootstrap_mean_ci(scores, resamples=1000)
    assert np.all(low < scores.mean(axis=0)) and np.all(scores.mean(axis=0) < high)
    assert bootstrap_means(scores, resamples=10).shape == (10, 20)


def test_no_differing_record_gives_a_narrow_interval_around_zero_bounded_by_the_share_that_differ():
    low, high, method = paired_difference_ci(np.zeros(300))
    assert method == BOUNDED_DIFFERENCE and low == -high and 0.0126 < high < 0.02  # Wilson's 0/300 bound at 97.5%
    low, high, _ = paired_difference_ci(np.r_[np.zeros(295), np.ones(5)])  # 5 records differ, all by +1
    assert 0.0 < 5 / 300 <= high < 0.05 and low < 5 / 300
