"""What a finished run prints last: a telling sample, the accuracies with 95% intervals, the paired verdicts
(student vs teacher, and both vs the retrieval baseline: does the student beat copying?)."""

from __future__ import annotations

import numpy as np

from ..core.schema import ACCURACY, R_VS_GT, S_VS_GT_SCRIPT1, S_VS_T_SCRIPT1, T_VS_GT_SCRIPT1, record_key, script1
from ..scoring.statistics import DEFAULT_CONFIDENCE, paired_test, score_mean_ci

SIGNIFICANCE = 0.05  # a paired p value below it: the student and the teacher are distinguishable


def telling_record(records: list[dict]) -> dict | None:
    """The first record the student gets right (vs the truth, else vs the teacher), else the first; None without any."""
    for suffix in (S_VS_GT_SCRIPT1, S_VS_T_SCRIPT1):
        for record in records:
            if record[record_key(ACCURACY, suffix)] == 1.0:
                return record
    return records[0] if records else None


def paired_verdict(student: np.ndarray, teacher: np.ndarray, names: tuple[str, str] = ("student", "teacher")) -> str:
    """Two predictions on the same records: McNemar's exact test for 0/1 scores, else a sign-flip permutation test."""
    result = paired_test(student, teacher, binary=True)
    p_value, test = result.p_value, result.test
    verdict = "distinguishable" if p_value < SIGNIFICANCE else "not distinguishable"
    return (f"{names[0]} vs {names[1]}, paired over the same records ({test}): p = {p_value:.3g}, {verdict} "
            f"at {SIGNIFICANCE}")


def beats(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether `first` scores higher than `second` on the same records with a paired p below SIGNIFICANCE."""
    return first.mean() > second.mean() and paired_test(first, second, binary=True).p_value < SIGNIFICANCE


def retrieval_lines(records: list[dict], student: np.ndarray, teacher: np.ndarray) -> list[str]:
    """The retrieval baseline's accuracy with its interval, both models paired with it, and whether the student
    beats it; one line saying why there is none when the records have no retrieval prediction."""
    key = record_key(ACCURACY, script1(R_VS_GT))
    if not all(key in record for record in records):
        return ["  no retrieval baseline: the run has no training record to retrieve from"]
    retrieval = np.array([record[key] for record in records], dtype=np.float64)
    low, high = score_mean_ci(retrieval)
    lines = [f"  retrieval accuracy vs truth {retrieval.mean():.4f} [{low:.4f}, {high:.4f}] "
             "(BM25: the assertion of the nearest training test, never from its own test file)",
             f"  {paired_verdict(student, retrieval, ('student', 'retrieval'))}",
             f"  {paired_verdict(teacher, retrieval, ('teacher', 'retrieval'))}"]
    verdict = "BEATS" if beats(student, retrieval) else "does NOT beat"
    lines.append(f"  the student {verdict} copying the nearest training assertion (retrieval) at p < {SIGNIFICANCE}")
    return lines


def final_lines(records: list[dict]) -> list[str]:
    """Both accuracies vs the ground truth with their intervals, the student's share and the paired verdict."""
    if not records:
        return []
    student = np.array([record[record_key(ACCURACY, S_VS_GT_SCRIPT1)] for record in records], dtype=np.float64)
    teacher = np.array([record[record_key(ACCURACY, T_VS_GT_SCRIPT1)] for record in records], dtype=np.float64)
    lines = [f"Final, on {len(records)} validation records ({DEFAULT_CONFIDENCE:.0%} intervals, Wilson-floored):"]
    for name, scores in (("student", student), ("teacher", teacher)):
        low, high = score_mean_ci(scores)  # the summary's confidence_intervals method, so both say the same
        lines.append(f"  {name} accuracy vs truth {scores.mean():.4f} [{low:.4f}, {high:.4f}]")
    share = f"student reaches {student.mean() / teacher.mean():.1%} of the teacher; " if teacher.mean() else ""
    lines.append(f"  {share}{paired_verdict(student, teacher)}")
    return lines + retrieval_lines(records, student, teacher)
