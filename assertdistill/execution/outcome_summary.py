"""execution_summary.json: records counted by reason, per-candidate rates with 95% intervals, paired comparisons."""

from __future__ import annotations

import collections

import numpy as np

from ..core.schema import (
    EXEC_CANDIDATE,
    EXEC_COMPILED,
    EXEC_KILLED,
    EXEC_MUTANTS,
    EXEC_OUTCOME,
    EXEC_PASSED,
    EXEC_REASON,
    EXEC_STATUS,
    EXEC_TEXT,
    PROJECT_LEFT_OUT_MAIN_FILES,
    PROJECT_MAIN_BUILD_ERROR,
    PROJECT_SECONDS,
    ROW_GROUND_TRUTH,
    ROW_INDEX,
    ROW_RETRIEVAL_PREDICTION,
    ROW_STUDENT_PREDICTION,
    ROW_TEACHER_PREDICTION,
    STATUS_COUNTED,
    SUM_CANDIDATES,
    SUM_COMPILE_RATE,
    SUM_COUNT,
    SUM_EXACT_MATCH,
    SUM_EXECUTABLE,
    SUM_GROUND_TRUTH_MUTATION_SCORE,
    SUM_INTERVAL,
    SUM_INTERVAL_METHOD,
    SUM_MUTATION_DIFFERENCE,
    SUM_MUTATION_DIFFERENCE_INTERVAL,
    SUM_MUTATION_P,
    SUM_MUTATION_SCORE,
    SUM_NOT_COUNTED_BY_REASON,
    SUM_ONLY_FIRST_PASSES,
    SUM_ONLY_SECOND_PASSES,
    SUM_OUTCOMES,
    SUM_PAIRED,
    SUM_PASS_MCNEMAR_P,
    SUM_PASS_RATE,
    SUM_RECORDS,
    SUM_TRIED,
    SUM_VALUE,
)
from ..scoring.metrics import strict_exact_match
from ..scoring.statistics import BOOTSTRAP_METHOD, mcnemar_exact, paired_test, score_mean_ci

INTERVAL_METHOD = (f"rates and mutation scores: {BOOTSTRAP_METHOD} (fewer records: the bound their mean allows); "
                   "paired: McNemar exact (pass); statistics.paired_test (mutation score, a failing candidate "
                   "scoring 0: sign-flip permutation test, paired bootstrap interval)")
PAIRS = ((ROW_STUDENT_PREDICTION, ROW_TEACHER_PREDICTION), (ROW_STUDENT_PREDICTION, ROW_GROUND_TRUTH),
         (ROW_TEACHER_PREDICTION, ROW_GROUND_TRUTH), (ROW_STUDENT_PREDICTION, ROW_RETRIEVAL_PREDICTION),
         (ROW_TEACHER_PREDICTION, ROW_RETRIEVAL_PREDICTION))


def rate(values: list[float]) -> dict:
    """{value, interval, count} of a mean of scores in [0, 1] (statistics.score_mean_ci: at least Wilson)."""
    if not values:
        return {SUM_VALUE: None, SUM_INTERVAL: None, SUM_COUNT: 0}
    low, high = score_mean_ci(np.asarray(values, dtype=np.float64))
    return {SUM_VALUE: float(np.mean(values)), SUM_INTERVAL: [low, high], SUM_COUNT: len(values)}


def _mutation_fraction(row: dict) -> float | None:
    """killed / mutants of a row that ran against mutants (0 for a candidate that fails); None otherwise."""
    if not row.get(EXEC_MUTANTS):
        return None
    return (row[EXEC_KILLED] or 0) / row[EXEC_MUTANTS]


def summarize(rows: list[dict], candidates: tuple[str, ...]) -> dict:
    """The summary of execution.jsonl's rows: records, per candidate, paired comparisons."""
    by_record: dict = collections.OrderedDict()
    for row in rows:
        by_record.setdefault(row[ROW_INDEX], {})[row[EXEC_CANDIDATE]] = row
    reasons = collections.Counter()
    counted = {}
    for index, cells in by_record.items():
        first = next(iter(cells.values()))
        if first[EXEC_STATUS] == STATUS_COUNTED:
            counted[index] = cells
        else:
            reasons[f"{first[EXEC_STATUS]}:{first[EXEC_REASON]}"] += 1
    summary = {SUM_RECORDS: {SUM_TRIED: len(by_record), SUM_EXECUTABLE: len(counted),
                             SUM_NOT_COUNTED_BY_REASON: dict(sorted(reasons.items()))},
               SUM_INTERVAL_METHOD: INTERVAL_METHOD, SUM_CANDIDATES: {}, SUM_PAIRED: {}}
    for candidate in candidates:
        cells = [(c[candidate], c.get(ROW_GROUND_TRUTH)) for c in counted.values() if candidate in c]
        scored = [(_mutation_fraction(row), _mutation_fraction(truth) if truth else None)
                  for row, truth in cells if row[EXEC_PASSED]]
        scored = [(mine, truth) for mine, truth in scored if mine is not None]
        summary[SUM_CANDIDATES][candidate] = {
            SUM_EXACT_MATCH: rate([strict_exact_match(row[EXEC_TEXT], truth[EXEC_TEXT]) for row, truth in cells
                                   if truth is not None]),
            SUM_COMPILE_RATE: rate([float(bool(row[EXEC_COMPILED])) for row, _ in cells]),
            SUM_PASS_RATE: rate([float(bool(row[EXEC_PASSED])) for row, _ in cells]),
            SUM_MUTATION_SCORE: rate([mine for mine, _ in scored]),
            SUM_GROUND_TRUTH_MUTATION_SCORE: rate([truth for _, truth in scored if truth is not None]),
            SUM_OUTCOMES: dict(collections.Counter(row[EXEC_OUTCOME] for row, _ in cells).most_common()),
        }
    for first, second in PAIRS:
        if first not in candidates or second not in candidates:
            continue
        both = [(c[first], c[second]) for c in counted.values() if first in c and second in c]
        if not both:
            continue
        passes = np.array([[bool(a[EXEC_PASSED]), bool(b[EXEC_PASSED])] for a, b in both])  # (N, 2)
        entry = {SUM_COUNT: len(both), SUM_PASS_MCNEMAR_P: mcnemar_exact(passes[:, 0], passes[:, 1]),
                 SUM_ONLY_FIRST_PASSES: int(np.count_nonzero(passes[:, 0] & ~passes[:, 1])),
                 SUM_ONLY_SECOND_PASSES: int(np.count_nonzero(~passes[:, 0] & passes[:, 1]))}
        fractions = [(_mutation_fraction(a), _mutation_fraction(b)) for a, b in both]
        fractions = [(x, y) for x, y in fractions if x is not None and y is not None]
        if fractions:
            result = paired_test([x for x, _ in fractions], [y for _, y in fractions])
            entry.update({SUM_MUTATION_DIFFERENCE: result.difference,
                          SUM_MUTATION_DIFFERENCE_INTERVAL: [result.ci_low, result.ci_high],
                          SUM_MUTATION_P: result.p_value})
        summary[SUM_PAIRED][f"{first}_vs_{second}"] = entry
    return summary


def project_line(repo: str, records: int, facts: dict) -> str:
    """The console's line for one project: its time, and what failed in its build (first compiler error)."""
    line = f"{repo}: {records} records in {facts[PROJECT_SECONDS]} s"
    left_out = facts[PROJECT_LEFT_OUT_MAIN_FILES]
    if facts[PROJECT_MAIN_BUILD_ERROR]:
        return f"{line}; its main build failed, no record runs: {facts[PROJECT_MAIN_BUILD_ERROR]}"
    if left_out:
        first = next(iter(left_out))
        line += f"; {len(left_out)} main file(s) left out of its build (summary: projects), first {first}: {left_out[first]}"
    return line
