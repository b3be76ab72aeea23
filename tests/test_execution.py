"""evaluate_execution.py on tests/data/java_projects/calc (JUnit 4): every outcome, mutants, bad input, the summary."""

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from util import java_and_sandbox_or_skip

import evaluate_execution
import make_dataset
from assertdistill.core import schema
from assertdistill.execution.mutants import generate_mutants, spread
from assertdistill.execution.outcome_summary import summarize
from assertdistill.execution.source import SourceError, mask_test

PROJECTS = Path(__file__).resolve().parent / "data" / "java_projects"
TEST_PATH = "src/test/java/calc/CalculatorTest.java"
FOCAL_PATH = "src/main/java/calc/Calculator.java"


def _row(index, method, truth, teacher=None, student=None, repo="calc", test_path=TEST_PATH, focal=FOCAL_PATH):
    row = {"index": index, "repo": repo, "test_path": test_path, "test_method": method, "ground_truth": truth}
    if focal:
        row["focal_path"] = focal
    if teacher is not None:
        row["teacher_prediction"] = teacher
    if student is not None:
        row["student_prediction"] = student
    return json.dumps(row)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    java_and_sandbox_or_skip()
    root = tmp_path_factory.mktemp("execution")
    escape = root / "escaped"  # outside the run's scratch directory: the sandbox must refuse it
    lines = [
        _row(0, "adds", "assertEquals(5, sum);", "assertEquals(6, sum);", "assertEquals(5, sum"),
        _row(1, "knowsPositives", "assertTrue(calc.isPositive(4));", "assertTrue(calc.spin());", "calc.exit();"),
        _row(2, "addsZero", "assertEquals(7, new Calculator().add(7, 0));",
             "assertEquals(1, new Calculator().divide(1, 0));", f'assertTrue(new java.io.File("{escape}").mkdir());',
             focal=None),
        _row(3, "wrongOnPurpose", "assertEquals(6, calc.add(2, 3));", student="assertEquals(5, calc.add(2, 3));"),
        _row(4, "a", "fail();", repo="no_such_project"),
        _row(5, "a", "fail();", test_path="src/test/java/calc/Missing.java"),
        _row(6, "noSuchMethod", "fail();"),
        "{not json",
        json.dumps({"index": 8, "repo": "calc", "ground_truth": "fail();"}),
    ]
    predictions = root / "predictions.jsonl"
    predictions.write_text("\n".join(lines) + "\n")
    out = root / "out"
    code = evaluate_execution.main(["--predictions", str(predictions), "--java_root", str(PROJECTS),
                                    "--output_dir", str(out), "--mutants", "20", "--timeout", "5"])
    assert code == 0
    rows = [json.loads(line) for line in (out / schema.EXECUTION_FILENAME).read_text().splitlines()]
    summary = json.loads((out / schema.EXECUTION_SUMMARY_FILENAME).read_text())
    return {(row["index"], row["candidate"]): row for row in rows}, summary, escape


def test_each_outcome_is_told_apart(run):
    rows, _, escape = run
    outcome = {key: row["outcome"] for key, row in rows.items() if row["status"] == "counted"}
    assert outcome == {
        (0, "ground_truth"): "passed", (0, "teacher_prediction"): "assertion_failed",
        (0, "student_prediction"): "compile_error",
        (1, "ground_truth"): "passed", (1, "teacher_prediction"): "timeout", (1, "student_prediction"): "system_exit",
        (2, "ground_truth"): "passed", (2, "teacher_prediction"): "other_exception",
        (2, "student_prediction"): "other_exception",
    }
    assert rows[(0, "student_prediction")]["compiled"] is False and rows[(0, "teacher_prediction")]["compiled"]
    assert "ArithmeticException" in rows[(2, "teacher_prediction")]["detail"]
    assert "sandbox" in rows[(2, "student_prediction")]["detail"] and not escape.exists()


def test_ground_truth_must_pass_for_a_record_to_count(run):
    rows, summary, _ = run
    assert {rows[(3, c)]["status"] for c in ("ground_truth", "student_prediction")} == {"environment"}
    assert rows[(3, "student_prediction")]["reason"] == "ground_truth_assertion_failed"
    assert rows[(3, "student_prediction")]["passed"] is None  # never run against a broken ground truth
    assert summary["records"] == {"tried": 9, "executable": 3, "not_counted_by_reason": {
        "bad_input:method_not_found": 1, "bad_input:missing_location": 1, "bad_input:missing_project": 1,
        "bad_input:missing_test_file": 1, "bad_input:unparsable_row": 1,
        "environment:ground_truth_assertion_failed": 1}}


def test_mutants_killed_and_survived(run):
    rows, summary, _ = run
    adds, positives = rows[(0, "ground_truth")], rows[(1, "ground_truth")]
    assert adds["mutants"] == positives["mutants"] >= 2
    # each test catches the mutants of the method it calls and none of the other method's
    assert 1 <= adds["killed"] < adds["mutants"] and 1 <= positives["killed"] < positives["mutants"]
    assert not set(adds["killed_mutants"]) & set(positives["killed_mutants"])
    assert rows[(0, "teacher_prediction")]["killed"] == rows[(0, "student_prediction")]["killed"] == 0  # failing ones
    assert rows[(0, "student_prediction")]["mutants"] == adds["mutants"]  # kill nothing, compiled or not
    assert rows[(2, "ground_truth")]["mutants"] is None  # no focal_path: no mutants
    assert summary["mutation"]["focal_files"] == 1 and summary["mutation"]["compiled"] == adds["mutants"]


def test_summary_rates_and_intervals(run):
    _, summary, _ = run
    truth, teacher = summary["candidates"]["ground_truth"], summary["candidates"]["teacher_prediction"]
    assert truth["pass_rate"]["value"] == 1.0 and truth["pass_rate"]["count"] == 3
    low, high = truth["pass_rate"]["interval"]
    assert high == 1.0 and 0.3 < low < 0.6  # Wilson's bound for 3 of 3, not the bootstrap's single point
    assert teacher["compile_rate"]["value"] == 1.0 and teacher["pass_rate"]["value"] == 0.0
    assert teacher["outcomes"] == {"assertion_failed": 1, "timeout": 1, "other_exception": 1}
    paired = summary["paired"]["student_prediction_vs_teacher_prediction"]
    assert paired["count"] == 3 and paired["only_first_passes"] == paired["only_second_passes"] == 0
    assert paired["pass_mcnemar_p"] == 1.0
    against_truth = summary["paired"]["teacher_prediction_vs_ground_truth"]
    assert against_truth["only_second_passes"] == 3 and against_truth["mutation_score_difference"] < 0
    # the build JVM twice (sources, then the mutants), and one sandboxed JVM per candidate run: 10 (record 3's
    # ground truth fails, so its two candidates never run)
    assert summary["projects"]["calc"]["jvm_starts"] == 12


def test_rows_made_by_make_dataset_classify_truth_wrong_literal_and_garbage(tmp_path):
    """The tool on make_dataset.py's own records of a project it has not seen before."""
    java_and_sandbox_or_skip()
    mined = tmp_path / "mined.jsonl"
    assert make_dataset.main(["--java_root", str(PROJECTS / "calc"), "--output", str(mined)]) == 0
    records = [json.loads(line) for line in mined.read_text().splitlines()]
    rows = []
    for index, record in enumerate(r for r in records if r["test_method"] in ("adds", "addsZero")):
        truth = "\n".join(record["assertions"])
        rows.append(json.dumps({**record, "index": index, "ground_truth": truth,
                                "teacher_prediction": truth.replace("assertEquals(", "assertEquals(1", 1),  # 15, 17
                                "student_prediction": "assertEquals(5, sum;;"}))
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert evaluate_execution.main(["--predictions", str(tmp_path / "rows.jsonl"), "--java_root", str(PROJECTS),
                                    "--output_dir", str(out)]) == 0
    summary = json.loads((out / schema.EXECUTION_SUMMARY_FILENAME).read_text())
    candidates = summary["candidates"]
    assert summary["records"]["executable"] == 2
    assert candidates["ground_truth"]["pass_rate"]["value"] == 1.0
    assert candidates["teacher_prediction"]["outcomes"] == {"assertion_failed": 2}
    assert candidates["student_prediction"]["compile_rate"]["value"] == 0.0


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert evaluate_execution.main(["--predictions", str(tmp_path / "none.jsonl"), "--java_root", str(tmp_path),
                                    "--output_dir", str(tmp_path / "o")]) == 2
    assert "is not a file" in capsys.readouterr().err
    (tmp_path / "p.jsonl").write_text("")
    assert evaluate_execution.main(["--predictions", str(tmp_path / "p.jsonl"), "--java_root", str(tmp_path),
                                    "--output_dir", str(tmp_path / "o"), "--candidates", "oracle"]) == 2
    assert "--candidates" in capsys.readouterr().err


def test_candidate_statements_fill_the_placeholders_in_order():
    text = ("package p;\nclass T {\n    @Test\n    void m() {\n        int a = 1;\n        assertEquals(1, a);\n"
            "        a++;\n        assertTrue(a > 1);\n    }\n}\n")
    masked = mask_test(text, "m", "assertEquals(1, a);\nassertTrue(a > 1);")
    assert masked.placeholders == 2 and masked.class_name == "p.T"
    restored = masked.with_candidate("assertEquals(1, a);\nassertTrue(a > 1);")
    assert restored.split() == text.split()  # the ground truth gives back the file (the method dedented)
    filled = masked.with_candidate("first();\nsecond();\nthird();")
    assert filled.index("first();") < filled.index("a++;") < filled.index("second();") < filled.index("third();")
    one = masked.with_candidate("only();")
    assert "only();" in one and "// <ASSERTION_PLACEHOLDER>" in one  # the second placeholder stays masked
    with pytest.raises(SourceError) as error:
        mask_test(text, "n", "")
    assert error.value.reason == "method_not_found"


def test_spread_picks_evenly_and_all_when_few():
    assert spread(3, 20) == [0, 1, 2]
    assert spread(100, 5) == [0, 25, 50, 74, 99]
    assert spread(10, 1) == [0]


def test_summary_pairs_only_counted_records():
    def cell(index, candidate, passed, status="counted", mutants=None, killed=None):
        return {"index": index, "candidate": candidate, "text": "fail();", "status": status,
                "reason": None if status == "counted" else "r", "compiled": passed is not None, "passed": passed,
                "outcome": "x", "mutants": mutants, "killed": killed}
    rows = [cell(0, "ground_truth", True, mutants=4, killed=2), cell(0, "teacher_prediction", True, mutants=4,
            killed=1), cell(0, "student_prediction", False, mutants=4, killed=0),
            cell(1, "ground_truth", None, "environment"), cell(1, "teacher_prediction", None, "environment")]
    summary = summarize(rows, ("ground_truth", "teacher_prediction", "student_prediction"))
    assert summary["records"]["executable"] == 1 and summary["records"]["not_counted_by_reason"] == {"environment:r": 1}
    teacher = summary["candidates"]["teacher_prediction"]
    assert teacher["mutation_score"]["value"] == 0.25 and teacher["ground_truth_mutation_score"]["value"] == 0.5
    assert teacher["exact_match"]["value"] == 1.0  # the same text as the ground truth
    paired = summary["paired"]["student_prediction_vs_teacher_prediction"]
    assert paired["only_second_passes"] == 1 and paired["mutation_score_difference"] == -0.25


def test_making_mutants_leaves_the_process_recursion_limit_as_it_was():
    if importlib.util.find_spec("littledarwin") is None:  # importing it here would raise the limit for good
        pytest.skip("littledarwin is not installed")
    limit = sys.getrecursionlimit()
    generate_mutants("class A { int f(int x) { return x + 1; } }")
    assert sys.getrecursionlimit() == limit  # json's C scanner on a deeply nested record needs the usual limit


def test_results_are_readable_by_others(tmp_path):
    from assertdistill.distill.summary import write_json_atomic
    previous = os.umask(0o022)
    try:
        write_json_atomic(str(tmp_path / "summary.json"), {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "summary.json").st_mode) == 0o644  # mkstemp alone gives 0600


def test_a_failed_main_build_is_named_with_its_first_error_and_left_out_files_listed(tmp_path, capsys):
    java_and_sandbox_or_skip()
    sources = {"broken/src/main/java/b/Broken.java": "package b; class Broken { Missing m; }",
               "partial/src/main/java/p/Good.java": "package p; public class Good { }",
               "partial/src/main/java/p/Bad.java": "package p; class Bad { int x = \"no\"; }"}
    for name, text in sources.items():
        (tmp_path / "root" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / name).write_text(text)
    rows = [{"repo": repo, "test_path": "src/test/java/T.java", "test_method": "t", "ground_truth": "fail();"}
            for repo in ("broken", "partial")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert evaluate_execution.main(["--predictions", str(tmp_path / "p.jsonl"), "--java_root", str(tmp_path / "root"),
                                    "--output_dir", str(tmp_path / "out")]) == 0
    console = capsys.readouterr().out
    assert "broken: 1 records in" in console and "main build failed" in console and "cannot find symbol" in console
    assert "partial: 1 records in" in console and "1 main file(s) left out" in console and "Bad.java" in console
    projects = json.loads((tmp_path / "out" / schema.EXECUTION_SUMMARY_FILENAME).read_text())["projects"]
    assert list(projects["partial"]["left_out_main_files"]) == ["src/main/java/p/Bad.java"]
    assert "incompatible types" in projects["partial"]["left_out_main_files"]["src/main/java/p/Bad.java"]
    assert projects["broken"]["main_files_left_out"] == 1 and "cannot find symbol" in projects["broken"]["main_build_error"]


def test_a_new_project_kind_or_mutation_tool_is_one_registered_class(tmp_path, monkeypatch):
    from assertdistill.execution import mutants, project

    monkeypatch.setitem(project.PROJECT_KINDS, "maven", None)  # the registrations below are undone after the test
    monkeypatch.setitem(mutants.MUTATION_TOOLS, "pit", None)

    @project.project_kind("maven")
    class MavenProject(project.DebianJarProject):
        """Stands in for a build by Maven."""

    @mutants.mutation_tool("pit")
    class Pit(mutants.MutationTool):
        def make(self, project, jvm, focal_path, limit):
            return mutants.FocalMutants(0, [], 0, "PIT stands in")

    layout = project.ProjectLayout(kind="maven")
    assert isinstance(project.make_project(tmp_path, layout, tmp_path / "work"), MavenProject)
    assert mutants.MUTATION_TOOLS["pit"] is Pit
    assert "pit" in evaluate_execution.parse_args(["--predictions", "p", "--java_root", "r", "--output_dir", "o",
                                                   "--mutation_tool", "pit"]).mutation_tool
    with pytest.raises(project.ProjectError) as unknown:
        project.make_project(tmp_path, project.ProjectLayout(kind="gradle"), tmp_path / "work")
    assert unknown.value.reason == "unknown_project_kind"
