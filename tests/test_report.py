"""The run's last lines: a telling sample, both accuracies with intervals, the paired student-vs-teacher verdict."""

import pytest

from assertdistill.distill.report import final_lines, telling_record
from assertdistill.scoring.statistics import mcnemar_exact, score_mean_ci

STUDENT, TEACHER, STUDENT_VS_TEACHER = ("accuracy_s_vs_gt_script1", "accuracy_t_vs_gt_script1",
                                        "accuracy_s_vs_t_script1")


def records(student_right: set, teacher_right: set, count: int, student_matches_teacher=frozenset()) -> list[dict]:
    return [{"index": i, STUDENT: float(i in student_right), TEACHER: float(i in teacher_right),
             STUDENT_VS_TEACHER: float(i in student_matches_teacher)} for i in range(count)]


def test_the_sample_is_a_correct_match_when_there_is_one():
    assert telling_record(records({7, 9}, {1}, 10, {3}))["index"] == 7  # right vs the truth
    assert telling_record(records(set(), {1}, 10, {3, 4}))["index"] == 3  # else the teacher's text
    assert telling_record(records(set(), {1}, 10))["index"] == 0  # else the first record
    assert telling_record([]) is None


def test_final_lines_give_both_accuracies_with_intervals_and_the_mcnemar_verdict():
    # The demo's shape: 300 records, student right on 16, teacher on 20 (12 of them shared).
    student, teacher = set(range(16)), set(range(4, 24))
    lines = final_lines(records(student, teacher, 300))
    assert lines[0] == "Final, on 300 validation records (95% intervals, Wilson-floored):"
    low, high = score_mean_ci([float(i in student) for i in range(300)])  # as the summary's confidence_intervals
    assert lines[1] == f"  student accuracy vs truth 0.0533 [{low:.4f}, {high:.4f}]"
    low, high = score_mean_ci([float(i in teacher) for i in range(300)])
    assert lines[2] == f"  teacher accuracy vs truth 0.0667 [{low:.4f}, {high:.4f}]"
    p_value = mcnemar_exact([i in student for i in range(300)], [i in teacher for i in range(300)])
    assert p_value == pytest.approx(0.388, abs=0.001)  # 4 records only the student gets, 8 only the teacher
    assert lines[3] == (f"  student reaches 80.0% of the teacher; student vs teacher, paired over the same records "
                        f"(McNemar exact): p = {p_value:.3g}, not distinguishable at 0.05")


def test_a_clear_difference_is_distinguishable():
    lines = final_lines(records(set(), set(range(40)), 100))
    assert lines[3].endswith("(McNemar exact): p = 1.82e-12, distinguishable at 0.05")
    assert "student reaches 0.0% of the teacher" in lines[3]
    assert lines[4:] == ["  no retrieval baseline: the run has no training record to retrieve from"]


RETRIEVAL = "accuracy_r_vs_gt_script1"


def with_retrieval(rows: list[dict], retrieval_right: set) -> list[dict]:
    return [{**row, RETRIEVAL: float(row["index"] in retrieval_right)} for row in rows]


def test_the_last_lines_say_whether_the_student_beats_retrieval():
    # The demo's shape: retrieval right on 33 of 300, the student on 16 (2 of them where retrieval is wrong).
    rows = with_retrieval(records(set(range(31, 47)), set(range(40, 60)), 300), set(range(33)))
    lines = final_lines(rows)
    low, high = score_mean_ci([float(i < 33) for i in range(300)])
    assert lines[4].startswith(f"  retrieval accuracy vs truth 0.1100 [{low:.4f}, {high:.4f}] (BM25")
    p_value = mcnemar_exact([31 <= i < 47 for i in range(300)], [i < 33 for i in range(300)])
    assert lines[5] == (f"  student vs retrieval, paired over the same records (McNemar exact): p = {p_value:.3g}, "
                        "distinguishable at 0.05")
    assert lines[6].startswith("  teacher vs retrieval, paired over the same records (McNemar exact): p = ")
    assert lines[7] == "  the student does NOT beat copying the nearest training assertion (retrieval) at p < 0.05"
    better = with_retrieval(records(set(range(40)), set(), 100), set(range(5)))
    assert final_lines(better)[-1] == "  the student BEATS copying the nearest training assertion (retrieval) at p < 0.05"
    tied = with_retrieval(records(set(range(6)), set(), 100), set(range(5)))  # higher, but not significantly
    assert "does NOT beat" in final_lines(tied)[-1]


def test_fractional_scores_use_the_sign_flip_test_and_a_teacher_at_zero_gives_no_share():
    rows = records(set(), set(), 20)
    rows[0][STUDENT] = 0.5
    assert "(sign-flip permutation (exact)): p = 1, not distinguishable" in final_lines(rows)[3]
    assert "reaches" not in final_lines(rows)[3]
    assert final_lines([]) == []


def test_a_run_ends_with_the_sample_both_accuracies_and_the_verdict(tmp_path, capsys):
    from util import tiny_model_and_archive, tiny_run_flags

    import script

    model_dir, flags = tiny_model_and_archive(tmp_path, num_train=4, num_val=3)
    assert script.main(tiny_run_flags(tmp_path, model_dir, flags, **{"--num_beams": 1})) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-8] == "Final, on 3 validation records (95% intervals, Wilson-floored):"
    assert out[-7].startswith("  student accuracy vs truth ") and out[-6].startswith("  teacher accuracy vs truth ")
    # The teacher's text holds one of each record's two assertions: per-record accuracy 0.5, a sign-flip test.
    assert "student vs teacher, paired over the same records (sign-flip permutation (exact)): p = " in out[-5]
    assert out[-5].endswith("distinguishable at 0.05")
    # the archive has training records: the retrieval baseline and the verdict on it come last
    assert out[-4].startswith("  retrieval accuracy vs truth ") and "student vs retrieval" in out[-3]
    assert "teacher vs retrieval" in out[-2] and "copying the nearest training assertion" in out[-1]
    assert any(line.startswith("Sample (record ") for line in out)


def test_the_last_lines_give_the_intervals_the_summary_writes():
    from assertdistill.core.schema import avg
    from assertdistill.distill.summary import confidence_intervals

    rows = records(set(range(16)), set(range(4, 24)), 300)
    written = confidence_intervals(rows, [STUDENT, TEACHER])
    lines = final_lines(rows)
    for line, name in ((lines[1], STUDENT), (lines[2], TEACHER)):
        low, high = written[avg(name)]
        assert line.endswith(f"[{low:.4f}, {high:.4f}]")
