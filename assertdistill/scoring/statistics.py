"""Uncertainty of averaged per-record scores: intervals of a mean, paired tests of two runs' difference.

Every function is vectorised numpy with a fixed seed, so the same values always give the same
answer. A per-record score is one number per validation record (e.g. that record's accuracy);
a run's metric is their mean. The methods and how to read them: docs/STATISTICS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
BOOTSTRAP_METHOD = "percentile bootstrap over records, widened to at least the Wilson interval"
DEFAULT_PERMUTATIONS = 4999  # Monte-Carlo sign flips when exact enumeration is too large: p >= 1/5000
EXACT_MAX_NONZERO = 12  # up to 2**12 sign patterns are enumerated: the p value is then exact
MIN_BOOTSTRAP_RECORDS = 30  # below this the percentile bootstrap is too narrow; the conservative interval is used
MIN_BOOTSTRAP_NONZERO = 10  # a paired difference bootstraps only with this many records that differ
SIGN_FLIP_EXACT = "sign-flip permutation (exact)"
SIGN_FLIP_MONTE_CARLO = "sign-flip permutation (Monte Carlo)"
MCNEMAR_EXACT = "McNemar exact"
PAIRED_BOOTSTRAP = "paired percentile bootstrap"
BOUNDED_DIFFERENCE = "conservative: bounded differences and the share that differ"
_MAX_BLOCK_ELEMENTS = 1 << 22  # resample-by-record count matrices are built this many cells at a time


def bootstrap_means(values, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of `resamples` resamples of the records (rows) drawn with replacement: (R,) or (R, M).

    values: (N,) or (N, M); each resample draws N rows. The draws depend only on N, `resamples` and
    `seed`, so the columns of one call, and calls on the same N and seed, use the same resamples (which
    makes two runs' bootstrap distributions paired record by record).
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[0] == 0:
        raise ValueError(f"need a non-empty (N,) or (N, M) array of per-record scores, got shape {array.shape}")
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    matrix = array.reshape(array.shape[0], -1)  # (N, M)
    records = matrix.shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, matrix.shape[1]))  # (R, M)
    block = max(1, _MAX_BLOCK_ELEMENTS // records)
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        drawn = rng.integers(0, records, size=(rows, records))  # (r, N) record indices
        flat = drawn + (np.arange(rows) * records)[:, None]
        counts = np.bincount(flat.ravel(), minlength=rows * records).reshape(rows, records)  # (r, N)
        means[start:start + rows] = counts @ matrix / records  # (r, M)
    return means[:, 0] if array.ndim == 1 else means


def _percentiles(distribution: np.ndarray, confidence: float) -> tuple:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(distribution, [tail, 1.0 - tail], axis=0)
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)


def bootstrap_mean_ci(values, resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                      seed: int = 0) -> tuple:
    """95% (by default) percentile-bootstrap interval of the mean: (low, high), arrays per column for (N, M)."""
    return _percentiles(bootstrap_means(values, resamples, seed), confidence)


def seeds_then_records_ci(per_seed_values, resamples: int = DEFAULT_RESAMPLES,
                          confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> tuple:
    """Interval of a cell's mean over seeds: resample the seeds, then the records within each drawn seed.

    per_seed_values: one (N_s,) or (N_s, M) array per seed (the cell mean is the mean of the seed
    means). With one seed this is bootstrap_mean_ci.
    """
    runs = [np.asarray(values, dtype=np.float64) for values in per_seed_values]
    if not runs:
        raise ValueError("need at least one seed's per-record scores")
    if len(runs) == 1:
        return bootstrap_mean_ci(runs[0], resamples, confidence, seed)
    per_seed = np.stack([bootstrap_means(values, resamples, seed + index)
                         for index, values in enumerate(runs)])  # (S, R) or (S, R, M)
    rng = np.random.default_rng(seed + len(runs))
    seeds = len(runs)
    drawn_seeds = rng.integers(0, seeds, size=(resamples, seeds))  # (R, S)
    # the i-th drawn seed of resample r takes that seed's record resample (r + i) mod R: no reuse within r
    record_draws = (np.arange(resamples)[:, None] + np.arange(seeds)[None, :]) % resamples  # (R, S)
    cell_means = per_seed[drawn_seeds, record_draws].mean(axis=1)  # (R,) or (R, M)
    return _percentiles(cell_means, confidence)


def score_mean_ci(values, resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                  seed: int = 0) -> tuple:
    """Interval of the mean of scores in [0, 1]: (low, high), arrays per column for (N, M).

    The percentile bootstrap with >= MIN_BOOTSTRAP_RECORDS records, else bounded_mean_ci; either way
    never narrower than the Wilson interval of the same mean and N (no zero width at 0 or 1).
    """
    array = np.asarray(values, dtype=np.float64)
    means = array.mean(axis=0)
    records = array.shape[0]
    if records < MIN_BOOTSTRAP_RECORDS:
        low, high = bounded_mean_ci(means, records, confidence)
    else:
        low, high = bootstrap_mean_ci(array, resamples, confidence, seed)
        wilson_low, wilson_high = wilson_ci(means, records, confidence)
        low, high = np.minimum(low, wilson_low), np.maximum(high, wilson_high)
    return (float(low), float(high)) if array.ndim == 1 else (np.asarray(low), np.asarray(high))


def at_least_wilson(interval: tuple[float, float], mean: float, count: int,
                    confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """`interval` widened to contain the Wilson interval of `mean` over `count` records, within [0, 1]."""
    wilson_low, wilson_high = wilson_ci(mean, count, confidence)
    return max(0.0, min(interval[0], wilson_low)), min(1.0, max(interval[1], wilson_high))


def sign_flip_test(differences, permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> tuple:
    """Two-sided p value of a zero mean paired difference by flipping signs: (p, exact), arrays for (N, M).

    differences: (N,) or (N, M) per-record differences of two runs (NaN: the record has no score; it is
    left out). Under the null hypothesis each difference is as likely to have either sign, so the
    observed |sum| is ranked among the sums of every sign pattern of the nonzero differences (exact, up
    to EXACT_MAX_NONZERO of them) or of `permutations` random ones (Monte Carlo, shared by the columns;
    p = (1 + as extreme) / (1 + permutations), which never falls below the level). Zero differences
    carry no sign; with m nonzero ones the smallest exact p is 2 / 2**m.
    """
    array = np.asarray(differences, dtype=np.float64)
    matrix = np.nan_to_num(array.reshape(array.shape[0], -1), nan=0.0)  # (N, M) a left-out record flips as 0
    p_values, exact = np.ones(matrix.shape[1]), np.ones(matrix.shape[1], dtype=bool)
    observed = np.abs(matrix.sum(axis=0))  # (M,)
    tolerance = 1e-9 * np.maximum(1.0, np.abs(matrix).sum(axis=0))  # sums equal but for rounding are ties
    nonzero_counts = np.count_nonzero(matrix, axis=0)
    for column in np.flatnonzero((nonzero_counts > 0) & (nonzero_counts <= EXACT_MAX_NONZERO)):
        nonzero = matrix[matrix[:, column] != 0.0, column]  # (m,)
        patterns = np.arange(1 << nonzero.size)[:, None] >> np.arange(nonzero.size) & 1  # (2^m, m) 1 = flipped
        sums = nonzero.sum() - 2.0 * (patterns @ nonzero)  # (2^m,)
        p_values[column] = np.count_nonzero(np.abs(sums) >= observed[column] - tolerance[column]) / len(sums)
    sampled = np.flatnonzero(nonzero_counts > EXACT_MAX_NONZERO)
    if sampled.size:
        rng = np.random.default_rng(seed)
        block = max(1, _MAX_BLOCK_ELEMENTS // matrix.shape[0])
        as_extreme = np.zeros(sampled.size)
        for start in range(0, permutations, block):
            rows = min(block, permutations - start)
            flipped = rng.integers(0, 2, size=(rows, matrix.shape[0])).astype(np.float64)  # (r, N) 1 = flipped
            sums = matrix[:, sampled].sum(axis=0) - 2.0 * (flipped @ matrix[:, sampled])  # (r, M')
            as_extreme += np.count_nonzero(np.abs(sums) >= observed[sampled] - tolerance[sampled], axis=0)
        p_values[sampled] = (as_extreme + 1) / (permutations + 1)
        exact[sampled] = False
    if array.ndim == 1:
        return float(p_values[0]), bool(exact[0])
    return p_values, exact


def paired_difference_ci(differences, resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                         seed: int = 0) -> tuple[float, float, str]:
    """Interval of the mean of (N,) differences of two [0, 1] scores: (low, high, method).

    The paired percentile bootstrap where it is trustworthy (>= MIN_BOOTSTRAP_RECORDS records, of which
    >= MIN_BOOTSTRAP_NONZERO differ, not all by the same amount); else a conservative interval: the
    bounded-mean interval of (difference + 1) / 2, a score in [0, 1], cut to +-(the Wilson upper bound of
    the share of records that differ), since |mean difference| <= that share. Each of the two is taken at
    confidence (1 + confidence) / 2, so both hold together with at least `confidence` (Bonferroni).
    """
    values = np.asarray(differences, dtype=np.float64)
    differing = np.count_nonzero(values)
    if len(values) >= MIN_BOOTSTRAP_RECORDS and differing >= MIN_BOOTSTRAP_NONZERO and np.ptp(values) > 0:
        low, high = bootstrap_mean_ci(values, resamples, confidence, seed)
        return low, high, PAIRED_BOOTSTRAP
    each = (1.0 + confidence) / 2.0
    shifted = float(np.clip((values.mean() + 1.0) / 2.0, 0.0, 1.0))
    low, high = bounded_mean_ci(shifted, len(values), each)
    share_bound = wilson_ci(differing / len(values), len(values), each)[1]
    return max(2.0 * low - 1.0, -share_bound), min(2.0 * high - 1.0, share_bound), BOUNDED_DIFFERENCE


@dataclass(frozen=True)
class PairedResult:
    """Two runs compared on the same records: the mean difference (run - reference), its interval and test."""

    difference: float
    ci_low: float
    ci_high: float
    ci_method: str
    p_value: float
    test: str
    records: int


def paired_tests(values, reference, binary=None, confidence: float = DEFAULT_CONFIDENCE,
                 seed: int = 0) -> list[PairedResult]:
    """Compare per-record scores in [0, 1] with a reference's on the same records, one PairedResult per column.

    values, reference: (N, M), row i the same record in both, NaN where a record has no score (left
    out of that column). A column flagged in `binary` (M,) whose scores are all 0/1 gets McNemar's exact
    test, the others the sign-flip permutation test (sign_flip_test); intervals from paired_difference_ci.
    """
    run = np.asarray(values, dtype=np.float64)
    base = np.asarray(reference, dtype=np.float64)
    if run.shape != base.shape or run.ndim != 2 or run.shape[0] == 0:
        raise ValueError(f"paired scores need two non-empty (N, M) arrays of one shape, got {run.shape} and {base.shape}")
    differences = run - base  # (N, M), NaN where either has no score
    zero_one = np.isin(run, (0.0, 1.0)) | np.isnan(differences), np.isin(base, (0.0, 1.0)) | np.isnan(differences)
    binary = np.zeros(run.shape[1], dtype=bool) if binary is None else np.asarray(binary, dtype=bool)
    mcnemar = binary & zero_one[0].all(axis=0) & zero_one[1].all(axis=0)  # (M,)
    p_values, exact = np.ones(run.shape[1]), np.ones(run.shape[1], dtype=bool)
    if not mcnemar.all():
        p_values[~mcnemar], exact[~mcnemar] = sign_flip_test(differences[:, ~mcnemar], seed=seed)
    results = []
    for column in range(run.shape[1]):
        kept = ~np.isnan(differences[:, column])
        if not kept.any():
            results.append(None)
            continue
        own, theirs, difference = run[kept, column], base[kept, column], differences[kept, column]
        low, high, ci_method = paired_difference_ci(difference, confidence=confidence, seed=seed)
        p_value, test = float(p_values[column]), SIGN_FLIP_EXACT if exact[column] else SIGN_FLIP_MONTE_CARLO
        if mcnemar[column]:
            p_value, test = mcnemar_exact(own == 1.0, theirs == 1.0), MCNEMAR_EXACT
        results.append(PairedResult(float(difference.mean()), low, high, ci_method, p_value, test, int(kept.sum())))
    return results


def paired_test(values, reference, binary: bool = False, confidence: float = DEFAULT_CONFIDENCE,
                seed: int = 0) -> PairedResult:
    """paired_tests of two (N,) arrays of per-record scores (no NaN): one PairedResult."""
    run, base = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if run.shape != base.shape or run.ndim != 1:
        raise ValueError(f"paired scores need two (N,) arrays of one length, got {run.shape} and {base.shape}")
    return paired_tests(run[:, None], base[:, None], [binary], confidence, seed)[0]


def mcnemar_exact(correct, reference_correct) -> float:
    """McNemar's exact (binomial) two-sided p value for paired yes/no outcomes on the same records."""
    run = np.asarray(correct, dtype=bool)
    base = np.asarray(reference_correct, dtype=bool)
    if run.shape != base.shape:
        raise ValueError(f"paired outcomes need equal shapes, got {run.shape} and {base.shape}")
    only_run = int(np.count_nonzero(run & ~base))
    only_reference = int(np.count_nonzero(~run & base))
    discordant = only_run + only_reference
    if discordant == 0:
        return 1.0
    k = np.arange(min(only_run, only_reference) + 1)
    log_terms = _log_comb(discordant, k) - discordant * math.log(2.0)  # log P(X = k), X ~ Bin(n, 1/2)
    peak = log_terms.max()
    return float(min(1.0, 2.0 * math.exp(peak) * np.exp(log_terms - peak).sum()))


def _log_comb(n: int, k: np.ndarray) -> np.ndarray:
    """log C(n, k) for an array of k."""
    log_gamma = np.vectorize(math.lgamma, otypes=[float])
    return math.lgamma(n + 1) - log_gamma(k + 1) - log_gamma(n - k + 1)


def wilson_ci(mean, count: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple:
    """The Wilson score interval of a proportion `mean` (float or array) observed over `count` records."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    mean = np.asarray(mean, dtype=np.float64)
    shrink = 1.0 + z * z / count
    centre = (mean + z * z / (2 * count)) / shrink
    half_width = z / shrink * np.sqrt(mean * (1.0 - mean) / count + z * z / (4 * count * count))
    low, high = np.maximum(0.0, centre - half_width), np.minimum(1.0, centre + half_width)
    return (float(low), float(high)) if mean.ndim == 0 else (low, high)


def bounded_mean_ci(mean, count: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple:
    """Conservative interval for the mean of `count` scores in [0, 1] known only by their mean (float or array).

    A score in [0, 1] with mean p has variance at most p (1 - p) (equality for 0/1 scores), so the
    normal interval p +- z sqrt(p (1 - p) / n) is at least as wide as the one the records would give.
    It is widened to also cover the Wilson score interval, which leans towards 1/2 as the skewed
    distribution of a mean near 0 or 1 does, and does not shrink to a point at p = 0 or 1; clipped to [0, 1].
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    means = np.asarray(mean, dtype=np.float64)
    if np.any((means < 0.0) | (means > 1.0)):  # NaN (no score) passes, giving a NaN interval
        raise ValueError(f"a bounded score's mean must lie in [0, 1], got {mean}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half_width = z * np.sqrt(means * (1.0 - means) / count)
    wilson_low, wilson_high = wilson_ci(means, count, confidence)
    low = np.maximum(0.0, np.minimum(means - half_width, wilson_low))
    high = np.minimum(1.0, np.maximum(means + half_width, wilson_high))
    return (float(low), float(high)) if means.ndim == 0 else (low, high)
