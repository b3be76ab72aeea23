"""Uncertainty of averaged per-record scores: bootstrap intervals, paired comparisons, McNemar's test.

Every function is vectorised numpy with a fixed seed, so the same values always give the same
interval. A per-record score is one number per validation record (e.g. that record's accuracy);
a run's metric is their mean.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
BOOTSTRAP_METHOD = "percentile bootstrap over records"
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


def paired_bootstrap(values, reference, resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> tuple[float, float, float, float]:
    """Paired comparison of two runs on the same records: (mean difference, ci low, ci high, p value).

    values, reference: (N,) per-record scores of the two runs, row i being the same record in both.
    The p value is two-sided, from the bootstrap distribution of the difference shifted to zero mean:
    the share of resamples at least as far from the observed difference as the difference is from 0.
    """
    run = np.asarray(values, dtype=np.float64)
    base = np.asarray(reference, dtype=np.float64)
    if run.shape != base.shape or run.ndim != 1:
        raise ValueError(f"paired scores need two (N,) arrays of one length, got {run.shape} and {base.shape}")
    differences = run - base  # (N,)
    observed = float(differences.mean())
    distribution = bootstrap_means(differences, resamples, seed)  # (R,)
    low, high = _percentiles(distribution, confidence)
    as_extreme = np.count_nonzero(np.abs(distribution - observed) >= abs(observed) - 1e-12)
    p_value = (as_extreme + 1) / (resamples + 1)
    return observed, low, high, float(min(1.0, p_value))


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


def bounded_mean_ci(mean: float, count: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Conservative interval for the mean of `count` scores in [0, 1] known only by their mean.

    A score in [0, 1] with mean p has variance at most p (1 - p) (equality for 0/1 scores), so the
    normal interval p +- z sqrt(p (1 - p) / n) is at least as wide as the one the records would give.
    It is widened to also cover the Wilson score interval, which leans towards 1/2 as the skewed
    distribution of a mean near 0 or 1 does, and does not shrink to a point at p = 0 or 1; clipped to [0, 1].
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    if not 0.0 <= mean <= 1.0:
        raise ValueError(f"a bounded score's mean must lie in [0, 1], got {mean}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half_width = z * math.sqrt(mean * (1.0 - mean) / count)
    shrink = 1.0 + z * z / count
    wilson_centre = (mean + z * z / (2 * count)) / shrink
    wilson_half_width = z / shrink * math.sqrt(mean * (1.0 - mean) / count + z * z / (4 * count * count))
    low = min(mean - half_width, wilson_centre - wilson_half_width)
    high = max(mean + half_width, wilson_centre + wilson_half_width)
    return max(0.0, low), min(1.0, high)
