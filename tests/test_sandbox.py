"""Model-written code cannot get out: escapes of the JVM's own checks, leaks between candidates, a compile bomb.

One run of evaluate_execution.py per isolation mode over tests/data/java_projects/calc, whose candidates attack:
reflection turns the runner's security manager off, a thread outlives its test, a symbolic link in scratch
points at the cached build, the default Locale / a system property / a thread are left for the next
candidate, and javac gets a source that takes minutes to compile. Each was an escape or a wrong result
before the operating-system sandbox (docs/EXECUTION.md, "What the sandbox guarantees").
"""

import hashlib
import json
import os
from pathlib import Path

import pytest
from util import java_and_sandbox_or_skip

import evaluate_execution
from assertdistill.core import schema
from assertdistill.execution import sandbox as sandbox_module
from assertdistill.execution.sandbox import Sandbox, SandboxLimits

PROJECTS = Path(__file__).resolve().parent / "data" / "java_projects"
TEST_PATH = "src/test/java/calc/CalculatorTest.java"
TRUTH = "assertEquals(5, sum);"
BOMB_LEVELS = 12  # javac 17 takes about a minute on this source (each level about 1.7x the one before)
COMPILE_TIMEOUT = 8.0


def _guarded(statements: str) -> str:
    """Java statements wrapped so that checked exceptions compile in a test method without `throws`."""
    return f"try {{ {statements} }} catch (Exception e) {{ throw new RuntimeException(e); }}"


def _bomb(levels: int) -> str:
    expression = "1"
    for _ in range(levels):
        expression = f"java.util.Objects.requireNonNullElse(true ? {expression} : null, 1)"
    return f"org.junit.Assert.assertNotNull({expression});"


TURN_OFF = ('java.lang.reflect.Field off = Class.forName("AssertionRunner").getDeclaredField("exiting"); '
            "off.setAccessible(true); off.setBoolean(null, true);")
LOCALE_SENSITIVE = 'assertEquals("1.5", String.format("%.1f", 1.5));\norg.junit.Assert.assertNull(System.getProperty("calc.mode"));'


def _rows(outside: Path, main_class: Path) -> list[dict]:
    """The attacks, as predictions rows (candidates run in the order truth, teacher, student)."""
    write = "java.nio.file.Files.write(java.nio.file.Paths.get(\"{}\"), new byte[] {{1}});"
    link = ('java.nio.file.Path link{n} = java.nio.file.Paths.get(System.getProperty("java.io.tmpdir"), "link{n}"); '
            'java.nio.file.Files.createSymbolicLink(link{n}, java.nio.file.Paths.get("{target}")); '
            "java.nio.file.Files.write(link{n}, new byte[] {{0}});")
    attacks = [
        (_guarded(TURN_OFF + write.format(outside / "reflection")),
         _guarded(TURN_OFF + 'assertEquals("not root", new String(Runtime.getRuntime().exec(new String[] {"id", "-u"})'
                  ".getInputStream().readAllBytes()).trim());")),
        ("new Thread(() -> { try { Thread.sleep(300); " + write.format(outside / "thread")
         + " } catch (Exception e) { } }).start();",
         _guarded(link.format(n=1, target=main_class) + link.format(n=2, target=outside / "symlink"))),
        ('java.util.Locale.setDefault(java.util.Locale.GERMANY); System.setProperty("calc.mode", "broken");',
         "Thread t = new Thread(() -> { while (true) { java.util.Locale.setDefault(java.util.Locale.GERMANY); "
         "try { Thread.sleep(2); } catch (InterruptedException e) { return; } } }); t.setDaemon(true); t.start();"),
        (LOCALE_SENSITIVE, LOCALE_SENSITIVE),
        (_bomb(BOMB_LEVELS), TRUTH),
    ]
    truths = [TRUTH, TRUTH, TRUTH, LOCALE_SENSITIVE, TRUTH]
    return [{"repo": "calc", "test_path": TEST_PATH, "test_method": "adds", "ground_truth": truth,
             "teacher_prediction": teacher, "student_prediction": student}
            for truth, (teacher, student) in zip(truths, attacks)]


@pytest.fixture(scope="module", params=["candidate", "leak"])
def attacked(request, tmp_path_factory):
    java_and_sandbox_or_skip()
    root = tmp_path_factory.mktemp(f"attacked_{request.param}")
    outside, work = root / "outside", root / "work"
    outside.mkdir()
    main_class = work / "calc" / "main" / "calc" / "Calculator.class"
    predictions = root / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in _rows(outside, main_class)))
    out = root / "out"
    code = evaluate_execution.main(["--predictions", str(predictions), "--java_root", str(PROJECTS),
                                    "--output_dir", str(out), "--work_dir", str(work), "--timeout", "10",
                                    "--compile_timeout", str(COMPILE_TIMEOUT), "--isolation", request.param])
    assert code == 0
    rows = [json.loads(line) for line in (out / schema.EXECUTION_FILENAME).read_text().splitlines()]
    summary = json.loads((out / schema.EXECUTION_SUMMARY_FILENAME).read_text())
    return {(row["index"], row["candidate"]): row for row in rows}, summary, outside, main_class


def test_reflection_that_turns_the_jvm_checks_off_still_cannot_write_outside(attacked):
    rows, _, outside, _ = attacked
    assert not (outside / "reflection").exists()
    assert rows[(0, "teacher_prediction")]["outcome"] == "other_exception"  # the write failed: no such directory
    identity = rows[(0, "student_prediction")]["detail"]  # `id -u` ran (the JVM checks were off), as nobody
    assert "but was:<" in identity and "was:<[0]>" not in identity and "was:<0>" not in identity
    if os.geteuid() == 0:
        assert "65534" in identity


def test_a_thread_outliving_its_test_and_a_symlink_in_scratch_reach_nothing(attacked):
    rows, _, outside, main_class = attacked
    assert rows[(1, "teacher_prediction")]["outcome"] == "passed"
    assert not (outside / "thread").exists() and not (outside / "symlink").exists()
    assert "Read-only file system" in rows[(1, "student_prediction")]["detail"]
    assert main_class.read_bytes()[:4] == bytes.fromhex("cafebabe")  # the cached build is intact


def test_no_candidate_changes_the_next_ones_result(attacked):
    rows, summary, _, _ = attacked
    # record 3's ground truth prints 1.5 with the default Locale and reads a property; Locale.GERMANY, the
    # property and a thread setting the Locale again and again were left by record 2's candidates
    assert [rows[(3, c)]["outcome"] for c in ("ground_truth", "teacher_prediction", "student_prediction")] == \
        ["passed"] * 3
    assert summary["records"]["executable"] == 5 and summary["records"]["not_counted_by_reason"] == {}


def test_a_compile_bomb_is_stopped_at_the_compile_timeout(attacked):
    rows, summary, _, _ = attacked
    bomb = rows[(4, "teacher_prediction")]
    assert bomb["outcome"] == "compile_timeout" and bomb["compiled"] is False
    assert bomb["seconds"] < COMPILE_TIMEOUT + 20  # an unbounded javac takes about a minute
    assert rows[(4, "student_prediction")]["outcome"] == "passed"  # the next candidate runs as usual
    assert summary["candidates"]["teacher_prediction"]["outcomes"]["compile_timeout"] == 1


def test_without_a_sandbox_the_tool_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sandbox_module, "BWRAP", "no-such-bwrap")
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("")
    assert evaluate_execution.main(["--predictions", str(predictions), "--java_root", str(tmp_path),
                                    "--output_dir", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--unsafe_no_sandbox" in error and "no-such-bwrap is not installed" in error


def test_the_sandbox_has_no_network_no_root_and_sees_only_what_it_is_given(tmp_path):
    java_and_sandbox_or_skip()
    given, hidden = tmp_path / "given", tmp_path / "hidden"
    given.mkdir()
    hidden.mkdir()
    (hidden / "secret").write_text("x")
    sandbox = Sandbox(SandboxLimits())
    writable = sandbox.prepare_writable(given / "scratch")
    script = (f"id -u; cat {hidden / 'secret'} || echo hidden; touch {given}/x || echo read-only; "
              f"touch {writable}/ok && echo writable; cat /proc/net/dev | grep -c ':' ; ls /root /home 2>&1 | head -1")
    done = sandbox.run(["/bin/sh", "-c", script], read_only=[given], writable=[writable], cwd=given, timeout=30)
    lines = done.stdout.decode().splitlines()
    assert lines[0] != "0" and "hidden" in lines and "read-only" in lines and "writable" in lines
    assert lines[lines.index("writable") + 1] == "1"  # one network interface: the sandbox's own loopback
    assert "No such file or directory" in lines[-1]
    assert hashlib.sha256((hidden / "secret").read_bytes()).hexdigest()  # still there, untouched
