"""Hostile predictions rows: each is one counted bad_input outcome with its line number, and the run goes on."""

import json
import os
from pathlib import Path

import pytest

import evaluate_execution
from assertdistill.core import schema
from assertdistill.execution.rows import MAX_DEPTH, read_rows

CANDIDATES = ("ground_truth", "teacher_prediction", "student_prediction")
GOOD = {"repo": "calc", "test_path": "src/test/java/calc/CalculatorTest.java", "test_method": "adds",
        "ground_truth": "assertEquals(5, sum);", "student_prediction": "assertEquals(5, sum);"}


def _line(**changes) -> bytes:
    row = {**GOOD, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not ...}).encode()


HOSTILE = {  # reason -> the raw line
    "number_too_long": b'{"index": ' + b"9" * 5000 + b', "repo": "calc"}',
    "lone_surrogate": _line(student_prediction="assertTrue(\ud800);"),
    "too_deeply_nested": b"[" * 100000 + b"]" * 100000,
    "not_utf8": _line(student_prediction="assertTrue(x);").replace(b"x", b"\xff\xfe"),
    "missing_location": _line(test_path=...),
    "wrong_field_type": _line(student_prediction=["assertTrue(true);"]),
    "missing_ground_truth": _line(ground_truth=...),
    "unparsable_row": b'{"repo": "calc", ',
    "path_outside_java_root": _line(repo="../../etc"),
}
OUTSIDE = {  # more ways out of --java_root, all path_outside_java_root
    "absolute repo": _line(repo="/etc"),
    "test_path up": _line(test_path="../../../../etc/passwd"),
    "repo through a symlink": _line(repo="escape"),
    "test_path through a symlink": _line(test_path="src/escape/passwd"),
    "java_root itself": _line(repo="."),
    "focal_path up": _line(focal_path="../other/Secret.java"),
}


@pytest.fixture
def java_root(tmp_path):
    root = tmp_path / "java_root"
    (root / "calc" / "src").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    (root / "calc" / "src" / "escape").symlink_to("/etc")
    return root


def test_each_hostile_row_is_one_bad_input_with_its_line_number(tmp_path, java_root):
    lines = [_line(), *HOSTILE.values(), *OUTSIDE.values(), _line()]
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    records, bad = read_rows(path, CANDIDATES, java_root)
    assert [r.index for r in records] == [0, len(lines) - 1]  # the good rows around them are read
    by_index = {}
    for row in bad:
        by_index.setdefault(row["index"], set()).add((row["reason"], row["detail"].split(":")[0]))
    reasons = [*HOSTILE, *["path_outside_java_root"] * len(OUTSIDE)]
    assert by_index == {index: {(reason, f"line {index + 1}")} for index, reason in enumerate(reasons, 1)}
    assert len(bad) == len(reasons) * len(CANDIDATES)  # one row per candidate: the record is counted once


def test_depth_is_bounded_before_parsing(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"a": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b', "b": "[[[[[[[[[[[["}\n'
                     + _line(ground_truth="[" * 100) + b"\n")
    records, bad = read_rows(path, CANDIDATES)
    assert [row["reason"] for row in bad][:1] == ["too_deeply_nested"] and len(records) == 1  # brackets in strings


def test_the_tool_counts_hostile_rows_and_writes_its_results(tmp_path, java_root, capsys):
    lines = [*HOSTILE.values(), *OUTSIDE.values()]
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    assert evaluate_execution.main(["--predictions", str(tmp_path / "p.jsonl"), "--java_root", str(java_root),
                                    "--output_dir", str(out), "--unsafe_no_sandbox"]) == 0
    summary = json.loads((out / schema.EXECUTION_SUMMARY_FILENAME).read_text())
    assert summary["records"]["tried"] == len(lines)
    assert sum(summary["records"]["not_counted_by_reason"].values()) == len(lines)
    assert all(reason.startswith("bad_input:") for reason in summary["records"]["not_counted_by_reason"])
    assert "Traceback" not in capsys.readouterr().err
    assert not (Path("/etc") / "main").exists() and os.listdir(java_root / "calc") == ["src"]  # nothing written there
