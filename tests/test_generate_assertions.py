"""generate_assertions.py: placeholders filled with the student's assertions, inputs as the dataset builds them."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from util import tiny_t5, tiny_tokenizer

import export_int8 as export_int8_script
import generate_assertions
from assertdistill.core import schema
from assertdistill.data.encoding import InputEncoder
from assertdistill.deploy.saved_student import load_saved_student
from assertdistill.java.mining import PLACEHOLDER, MiningStats, mine_repos
from assertdistill.java.placeholders import FocalFinder, find_placeholders, parses_as_statement

TARGET = "assertEquals(3, calculator.add(1, 2));\nassertTrue(stack.isEmpty());"
FOCAL = "package com.x;\n\npublic class Calculator {\n    public int add(int a, int b) { return a + b; }\n}\n"
TEST_FILE = f"""package com.x;

import org.junit.Test;

public class CalculatorTest {{
    @Test
    public void testAdd() {{
        Calculator calculator = new Calculator();
        {PLACEHOLDER}
    }}

    @Test
    public void testTwo() {{
        Calculator calculator = new Calculator();
        int sum = calculator.add(2, 2);
        {PLACEHOLDER}
        if (sum > 0) {{
            {PLACEHOLDER}
        }}
    }}
}}
"""
FLAGS = {"num_beams": 2, "student_max_src_length": 256, "student_max_tgt_length": 40}


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """A tiny T5 taught to write TARGET whatever the input, saved as a run saves its final student."""
    tokenizer = tiny_tokenizer()
    model = tiny_t5(tokenizer)
    encoder = InputEncoder(tokenizer, FLAGS["student_max_src_length"], FLAGS["student_max_tgt_length"])
    methods = [site.test_method_masked for site in find_placeholders("T.java", TEST_FILE).sites]
    inputs = [encoder.encode_source(focal, method) for focal in (FOCAL, "") for method in methods]
    width = max(map(len, inputs))
    sources = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in inputs])
    attention_mask = (sources != tokenizer.pad_token_id).long()
    labels = torch.tensor([tokenizer(TARGET)["input_ids"]] * len(inputs))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread
    try:
        for _ in range(150):
            loss = model(input_ids=sources, attention_mask=attention_mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    directory = tmp_path_factory.mktemp("run") / schema.FINAL_MODEL_DIRNAME
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / schema.TRAINING_ARGS_FINAL_FILENAME).write_text(json.dumps(FLAGS))
    return str(directory)


def project(root, test_text=TEST_FILE):
    """A Maven-layout project: the test file and its focal class; returns the test file's path."""
    test = root / "src" / "test" / "java" / "com" / "x" / "CalculatorTest.java"
    main = root / "src" / "main" / "java" / "com" / "x" / "Calculator.java"
    for path, text in ((test, test_text), (main, FOCAL)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return test


def run(argv, capsys):
    code = generate_assertions.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def placeholder_lines(text):
    return [number for number, line in enumerate(text.split("\n"), 1) if line.strip() == PLACEHOLDER]


def test_diff_replaces_only_placeholder_lines_with_statements(tmp_path, student_dir, capsys):
    test = project(tmp_path)
    code, out, err = run(["--model_dir", student_dir, str(test)], capsys)
    assert code == 0, err
    removed = [line[1:] for line in out.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert removed and all(line.strip() == PLACEHOLDER for line in removed)
    assert len(removed) == 3 and len(added) >= 3
    for line in added:
        assert parses_as_statement(line.strip()), line
    assert "beam 2" in err  # the saved run's --num_beams
    assert test.read_text() == TEST_FILE  # the diff is only printed


def test_json_gives_one_object_per_placeholder(tmp_path, student_dir, capsys):
    test = project(tmp_path)
    code, out, _ = run(["--model_dir", student_dir, "--json", "--num_beams", "1", str(tmp_path / "src")], capsys)
    assert code == 0
    objects = [json.loads(line) for line in out.splitlines()]
    assert [set(o) for o in objects] == [{"file", "method", "line", "assertion", "latency_ms"}] * 3
    assert [o["line"] for o in objects] == placeholder_lines(TEST_FILE)
    assert [o["method"] for o in objects] == ["CalculatorTest.testAdd"] + ["CalculatorTest.testTwo"] * 2
    assert all(o["file"] == str(test) and o["latency_ms"] > 0 for o in objects)
    assert objects[0]["assertion"] == TARGET  # one placeholder: every line the student wrote
    assert objects[1]["assertion"] == TARGET.split("\n")[0] and objects[2]["assertion"] == TARGET.split("\n")[1]


def test_in_place_rewrites_atomically_keeping_everything_else(tmp_path, student_dir, capsys):
    test = project(tmp_path)
    os.chmod(test, 0o640)
    code, out, _ = run(["--model_dir", student_dir, "--in_place", str(test)], capsys)
    assert code == 0 and out == ""
    rewritten = test.read_text()
    assert PLACEHOLDER not in rewritten
    kept = [line for line in TEST_FILE.split("\n") if line.strip() != PLACEHOLDER]
    assert [line for line in rewritten.split("\n") if line in kept] == kept
    assert "        " + TARGET.split("\n")[0] in rewritten.split("\n")  # the placeholder's indentation
    assert stat.S_IMODE(os.stat(test).st_mode) == 0o640
    assert os.listdir(test.parent) == ["CalculatorTest.java"]  # no temporary file left


def test_mask_existing_replaces_the_assertions_the_dataset_masks(tmp_path, student_dir, capsys):
    written = TEST_FILE.replace(PLACEHOLDER, "assertEquals(4, calculator.add(2, 2));", 1)
    test = project(tmp_path, written.replace(PLACEHOLDER, "assertTrue(sum > 3);"))
    code, out, _ = run(["--model_dir", student_dir, "--mask_existing", "--json", str(test)], capsys)
    assert code == 0
    assert len(out.splitlines()) == 3


def test_model_input_is_the_datasets(tmp_path, student_dir):
    """The method and focal class match make_dataset's record for the same test with its assertions in place."""
    asserted = TEST_FILE.replace(PLACEHOLDER, "assertTrue(true);")
    project(tmp_path, asserted)
    records = list(mine_repos([("repo", tmp_path)], MiningStats()))
    test = project(tmp_path / "copy")
    test_file = find_placeholders(str(test), test.read_text())
    FocalFinder().attach(test_file, str(tmp_path / "copy" / "src" / "main" / "java"))
    assert [s.test_method_masked for s in test_file.sites] == [r["test_method_masked"] for r in records]
    assert [s.focal_code for s in test_file.sites] == [r["focal_file"] for r in records]
    student = load_saved_student(student_dir)
    encoder = InputEncoder(student.tokenizer, 256, 40)
    assert "FOCAL CODE" in encoder.source_text(test_file.sites[0].focal_code, test_file.sites[0].test_method_masked)


def test_int8_backend_and_export_write_assertions(tmp_path, student_dir, capsys):
    test = project(tmp_path)
    export = tmp_path / "int8"
    assert export_int8_script.main(["--model_dir", student_dir, "--output_dir", str(export)]) == 0
    assert export_int8_script.main(["--model_dir", str(tmp_path), "--output_dir", str(tmp_path / "x")]) == 2
    assert "int8 export" in capsys.readouterr().out
    for argv in (["--model_dir", student_dir, "--backend", "int8"], ["--model_dir", str(export)]):
        code, out, err = run(argv + ["--json", str(test)], capsys)
        assert code == 0, err
        assert "int8" in err and len(out.splitlines()) == 3
    assert load_saved_student(str(export)).flags == FLAGS


@pytest.mark.parametrize("name, content, message", [
    ("Notes.txt", "hello", "not a Java file"),
    ("Broken.java", "public class Broken { void m( { }", "does not parse"),
    ("Plain.java", "public class Plain { void m() { int x = 1; } }", "no '// <ASSERTION_PLACEHOLDER>' line"),
])
def test_bad_files_get_one_line_and_the_others_are_processed(tmp_path, student_dir, capsys, name, content, message):
    good = project(tmp_path)
    bad = tmp_path / name
    bad.write_text(content)
    code, out, err = run(["--model_dir", student_dir, str(bad), str(good)], capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and str(bad) in errors[0]
    assert "+++ b/" + str(good).lstrip("/") in out and "b//" not in out  # the good file still got its diff


def test_a_directory_that_is_not_a_saved_student_is_one_line(tmp_path, capsys):
    test = project(tmp_path)
    (tmp_path / "empty").mkdir()
    for model_dir in (str(tmp_path / "empty"), str(tmp_path / "missing"), str(test.parent)):
        code, out, err = run(["--model_dir", model_dir, str(test)], capsys)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and "not" in err


def test_method_alone_without_focal_class_is_said_once(tmp_path, student_dir, capsys):
    test = tmp_path / "LoneTest.java"
    test.write_text(TEST_FILE)
    code, _, err = run(["--model_dir", student_dir, str(test)], capsys)
    assert code == 0
    assert err.count("no focal class") == 1 and "2 method(s)" in err


FORMS = {  # name -> the test file's bytes in that form
    "crlf": TEST_FILE.replace("\n", "\r\n").encode(),
    "mixed_endings": "".join(line + ("\r\n" if number % 2 else "\n")
                             for number, line in enumerate(TEST_FILE.split("\n")[:-1])).encode(),
    "bom": b"\xef\xbb\xbf" + TEST_FILE.encode(),
    "form_feed_and_u2028_in_comments": TEST_FILE.replace("import org", "// a\fb\u2028c\u0085d\nimport org").encode(),
    "no_final_newline": TEST_FILE.rstrip("\n").encode(),
    "crlf_bom_no_final_newline": b"\xef\xbb\xbf" + TEST_FILE.rstrip("\n").replace("\n", "\r\n").encode(),
}


def _shell(command, cwd):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{command}: {done.stdout} {done.stderr}"


@pytest.mark.parametrize("form", FORMS)
def test_diff_applies_with_patch_and_git_and_equals_in_place(form, tmp_path, student_dir, capsys, monkeypatch):
    relative = "src/test/java/com/x/CalculatorTest.java"
    copies = {}
    for name in ("patched", "git", "in_place"):
        test = project(tmp_path / name)
        test.write_bytes(FORMS[form])
        copies[name] = test
    monkeypatch.chdir(tmp_path / "patched")
    code, diff, err = run(["--model_dir", student_dir, relative], capsys)
    assert code == 0 and diff.count("\n+") >= 3, err
    (tmp_path / "change.diff").write_bytes(diff.encode("utf-8"))
    _shell(["patch", "-p1", "--quiet", "-i", str(tmp_path / "change.diff")], tmp_path / "patched")
    _shell(["git", "apply", "--check", str(tmp_path / "change.diff")], tmp_path / "git")
    monkeypatch.chdir(tmp_path / "in_place")
    assert run(["--model_dir", student_dir, "--in_place", relative], capsys)[0] == 0
    patched, rewritten = copies["patched"].read_bytes(), copies["in_place"].read_bytes()
    assert patched == rewritten and PLACEHOLDER.encode() not in rewritten
    original_lines = FORMS[form].split(b"\n")
    kept = [line for line in original_lines if PLACEHOLDER.encode() not in line]
    assert [line for line in rewritten.split(b"\n") if line in kept] == kept  # every other line byte for byte
    assert rewritten.startswith(b"\xef\xbb\xbf") == FORMS[form].startswith(b"\xef\xbb\xbf")
    assert rewritten.endswith(b"\n") == FORMS[form].endswith(b"\n")
    new_lines = [line for line in rewritten.split(b"\n") if line not in kept and line.strip()]
    crlf = FORMS[form].count(b"\r\n") == FORMS[form].count(b"\n")
    if crlf or form.startswith("crlf"):
        assert all(line.endswith(b"\r") or line is rewritten.split(b"\n")[-1] for line in new_lines)
    elif form != "mixed_endings":
        assert not any(line.endswith(b"\r") for line in new_lines)


def test_in_place_writes_through_a_symlink_and_refuses_a_read_only_file(tmp_path, student_dir, capsys):
    test = project(tmp_path)
    link = tmp_path / "Link.java"
    link.symlink_to(test)
    code, _, err = run(["--model_dir", student_dir, "--in_place", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink() and PLACEHOLDER not in test.read_text()
    other = project(tmp_path / "other")
    os.chmod(other, 0o444)
    code, _, err = run(["--model_dir", student_dir, "--in_place", str(other)], capsys)
    assert code == 1 and "read-only (mode 0444)" in err and other.read_text() == TEST_FILE
    assert "0 placeholder(s) in 0 file(s)" in err and "1 file(s) failed" in err


def test_closing_count_says_how_many_placeholders_got_an_assertion(tmp_path, student_dir, capsys):
    test = project(tmp_path)
    code, _, err = run(["--model_dir", student_dir, str(test)], capsys)
    assert code == 0 and "3 placeholder(s) in 1 file(s): 3 got an assertion, 0 none" in err


def test_mask_existing_in_place_needs_overwrite_assertions(tmp_path, student_dir, capsys):
    written = TEST_FILE.replace(PLACEHOLDER, "assertTrue(sum > 3);")
    test = project(tmp_path, written)
    with pytest.raises(SystemExit) as refused:
        generate_assertions.main(["--model_dir", student_dir, "--mask_existing", "--in_place", str(test)])
    assert refused.value.code == 2 and "--overwrite_assertions" in capsys.readouterr().err
    assert test.read_text() == written
    code, _, _ = run(["--model_dir", student_dir, "--mask_existing", "--in_place", "--overwrite_assertions",
                      str(test)], capsys)
    assert code == 0 and "assertTrue(sum > 3);" not in test.read_text()


def test_a_kill_while_writing_in_place_leaves_the_file_and_no_temporary_file(tmp_path):
    """kill -9 in the middle of the write (simulated in a child process): the file is whole, nothing is left."""
    test = project(tmp_path)
    child = ("import os, signal, sys\n"
             "from assertdistill.deploy import assertion_writer as w\n"
             "real = os.fdopen\n"
             "class Dying:\n"
             "    def __init__(self, stream): self.stream = stream\n"
             "    def __enter__(self): return self\n"
             "    def __exit__(self, *a): return False\n"
             "    def write(self, data): self.stream.write(data[:100]); self.stream.flush(); "
             "os.kill(os.getpid(), signal.SIGKILL)\n"
             "w.os.fdopen = lambda handle, mode: Dying(real(handle, mode))\n"
             "w.write_in_place(sys.argv[1], 'x' * 100000)\n")
    done = subprocess.run([sys.executable, "-c", child, str(test)], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, check=False)
    assert done.returncode == -9, done.stderr
    assert test.read_text() == TEST_FILE
    assert sorted(os.listdir(test.parent)) == ["CalculatorTest.java"]


@pytest.mark.parametrize("has_bf16", [True, False])
def test_bf16_backend_writes_assertions_with_bf16_weights_where_the_cpu_has_them(tmp_path, student_dir, capsys,
                                                                              monkeypatch, has_bf16):
    from assertdistill.model import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)  # without: torch emulates, same results
    monkeypatch.setattr(precision, "_warned", set())
    student = load_saved_student(student_dir, "bf16")
    assert next(student.model.parameters()).dtype == (torch.bfloat16 if has_bf16 else torch.float32)
    code, out, err = run(["--model_dir", student_dir, "--backend", "bf16", "--json", str(project(tmp_path))], capsys)
    assert code == 0, err
    assert "bf16" in err and len(out.splitlines()) == 3
