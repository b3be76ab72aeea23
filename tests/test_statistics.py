"""Bootstrap intervals, paired comparisons and McNemar's test on data with a known truth."""

import time

import numpy as np
import pytest

from assertdistill.statistics import (bootstrap_mean_ci, bootstrap_means, bounded_mean_ci, mcnemar_exact,
                                      paired_bootstrap, seeds_then_records_ci)


def test_interval_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_rate, records, sweeps = 0.3, 300, 300
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
    difference, low, high, p_value = paired_bootstrap(better, reference, seed=0)
    assert difference == pytest.approx(0.10)
    assert low > 0 and p_value < 0.05

    false_positives, repeats = 0, 200
    for repeat in range(repeats):
        same_rate = (rng.random(records) < 0.30).astype(float)
        other = (rng.random(records) < 0.30).astype(float)
        _, low, high, p_value = paired_bootstrap(other, same_rate, resamples=1000, seed=repeat)
        false_positives += p_value < 0.05
        assert (low > 0 or high < 0) == (p_value < 0.05) or abs(p_value - 0.05) < 0.02
    assert false_positives / repeats <= 0.09  # 5% expected; binomial spread over 200 repeats


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


def test_ten_thousand_records_and_twenty_metrics_in_well_under_a_second():
    scores = np.random.default_rng(6).random((10_000, 20))
    started = time.perf_counter()
    low, high = bootstrap_mean_ci(scores, resamples=1000)
    assert time.perf_counter() - started < 1.0
    assert np.all(low < scores.mean(axis=0)) and np.all(scores.mean(axis=0) < high)
    assert bootstrap_means(scores, resamples=10).shape == (10, 20)
