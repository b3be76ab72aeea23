"""Tests for make_dataset.py / assertdistill.java.mining on small Java trees written into tmp_path."""

import json
import re
import textwrap

import pytest

import make_dataset
from assertdistill.java.mining import (
    MiningStats,
    focal_name_candidates,
    mine_repos,
    one_line,
    split_records,
    strip_license_header,
)

FOO = "package p;\n\npublic class Foo {\n  int x;\n}\n"
BAR = "package p;\n\npublic class Bar {\n  int y;\n}\n"


def write_repo(root, files):
    """Write {relative path: source} under root (sources are dedented)."""
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root


def mine(root, files, exclude=()):
    """Mine one repository written from files; return (records, stats) after the accounting check."""
    stats = MiningStats()
    records = list(mine_repos([("repo", write_repo(root, files))], stats, exclude))
    stats.check()
    return records, stats


def java_test(name, body, header="", extends="", package="p"):
    """A test class source: imports, `class name [extends]`, and the given member declarations."""
    return (f"package {package};\n{header}\nimport org.junit.Test;\nimport static org.junit.Assert.*;\n\n"
            f"public class {name} {extends}{{\n{textwrap.indent(textwrap.dedent(body), '    ')}}}\n")


# (case id, test file path, test source, expected). expected: "samples" = [(method, assertions)] in file
# order, "skips" = {reason: count}; optional "focal_path", "focal_match", "masked" = {method: text}.
CASES = [
    ("junit3", "src/test/java/p/FooTest.java", java_test("FooTest", """
        public void testX() { assertEquals(1, new Foo().x); }
        public void helper() { assertTrue(true); }
        public static void testStatic() { assertTrue(true); }
        public void testWithArg(int a) { assertTrue(true); }
        """, extends="extends junit.framework.TestCase "),
     {"samples": [("testX", ["assertEquals(1, new Foo().x);"])], "focal_match": "name"}),
    ("junit3_via_external_TestCase_base", "src/test/java/p/FooTest.java", java_test("FooTest", """
        public void testX() { assertNotNull(new Foo()); }
        """, extends="extends AbstractFooTestCase "),
     {"samples": [("testX", ["assertNotNull(new Foo());"])]}),
    ("junit4_annotations", "src/test/java/p/FooTest.java", java_test("FooTest", """
        @Test public void a() { Assert.assertEquals(1, 1); }
        @org.junit.Test(expected = IllegalStateException.class) public void b() { fail("boom"); }
        public void testNotATestWithoutTestCase() { assertTrue(true); }
        """),
     {"samples": [("a", ["Assert.assertEquals(1, 1);"]), ("b", ['fail("boom");'])]}),
    ("junit5_parameterized_repeated_nested", "src/test/java/p/FooTest.java", java_test("FooTest", """
        @ParameterizedTest @ValueSource(ints = {1, 2}) void p(int v) { Assertions.assertTrue(v > 0); }
        @RepeatedTest(3) void r() { assertFalse(false); }
        @Nested class Inner { @Test void n() { assertSame(this, this); } }
        """),
     {"samples": [("p", ["Assertions.assertTrue(v > 0);"]), ("r", ["assertFalse(false);"]),
                  ("n", ["assertSame(this, this);"])]}),
    ("multi_line_assertion_keeps_string_spaces", "src/test/java/p/FooTest.java", java_test("FooTest", """
        @Test
        public void m() {
            Foo foo = new Foo();
            assertEquals("a  b",   // why
                    foo.toString());
        }
        """),
     {"samples": [("m", ['assertEquals("a  b", /* why */ foo.toString());'])],
      "masked": {"m": "@Test\npublic void m() {\n    Foo foo = new Foo();\n"
                      "    // <ASSERTION_PLACEHOLDER>\n}"}}),
    ("fail_and_nested_blocks_are_masked", "src/test/java/p/FooTest.java", java_test("FooTest", """
        @Test
        public void t() {
            try {
                new Foo();
                fail("expected");
            } catch (IllegalStateException e) {
                assertEquals("m", e.getMessage());
            }
            if (true) assertTrue(true); else assertFalse(true);
        }
        """),
     {"samples": [("t", ['fail("expected");', 'assertEquals("m", e.getMessage());',
                         "assertTrue(true);", "assertFalse(true);"])],
      "masked": {"t": "@Test\npublic void t() {\n    try {\n        new Foo();\n"
                      "        // <ASSERTION_PLACEHOLDER>\n    } catch (IllegalStateException e) {\n"
                      "        // <ASSERTION_PLACEHOLDER>\n    }\n    if (true) // <ASSERTION_PLACEHOLDER>\n"
                      "    else // <ASSERTION_PLACEHOLDER>\n}"}}),
    ("fluent_chains", "src/test/java/p/FooTest.java", java_test("FooTest", """
        @Test void f() {
            assertThat(new Foo()).isNotNull().hasFieldOrProperty("x");
            Assertions.assertThat(1).isEqualTo(1);
        }
        """),
     {"samples": [("f", ['assertThat(new Foo()).isNotNull().hasFieldOrProperty("x");',
                         "Assertions.assertThat(1).isEqualTo(1);"])]}),
    ("assert_throws_assignment_and_declaration", "src/test/java/p/FooTest.java", java_test("FooTest", """
        @Test void t() {
            Exception e;
            e = assertThrows(IllegalStateException.class, () -> new Foo());
            final RuntimeException r = assertThrows(RuntimeException.class, () -> {
                throw new RuntimeException();
            });
            assertAll(() -> assertEquals(1, 1), () -> assertTrue(true));
        }
        """),
     {"samples": [("t", ["e = assertThrows(IllegalStateException.class, () -> new Foo());",
                         "final RuntimeException r = assertThrows(RuntimeException.class, () -> "
                         "{ throw new RuntimeException(); });",
                         "assertAll(() -> assertEquals(1, 1), () -> assertTrue(true));"])]}),
    ("assert_in_lambda_or_anonymous_class_dropped", "src/test/java/p/FooTest.java", java_test("FooTest", """
        @Test void lambda() { Runnable r = () -> assertEquals(1, 2); r.run(); }
        @Test void anon() {
            assertNotNull(new Foo());
            new Thread(new Runnable() { public void run() { fail(); } }).start();
        }
        @Test void ok() { assertTrue(true); }
        """),
     {"samples": [("ok", ["assertTrue(true);"])], "skips": {"assert_in_lambda_or_nested": 2}}),
    ("assert_as_argument_dropped", "src/test/java/p/FooTest.java", java_test("FooTest", """
        @Test void arg() { System.out.println(assertThrows(E.class, () -> {})); }
        """),
     {"samples": [], "skips": {"assert_in_other_expression": 1}}),
    ("no_assertions_skipped", "src/test/java/p/FooTest.java", java_test("FooTest", """
        @Test void none() { new Foo(); }
        @Test void withAssertKeyword() { assert new Foo() != null; }
        """),
     {"samples": [], "skips": {"no_assertions": 2}}),
    ("TestFoo_Bar_to_Foo", "src/test/java/p/TestFoo_Basics.java", java_test("TestFoo_Basics", """
        public void testX() { assertEquals(0, new Foo().x); }
        """, extends="extends TestCase "),
     {"samples": [("testX", ["assertEquals(0, new Foo().x);"])], "focal_path": "src/main/java/p/Foo.java",
      "focal_match": "name"}),
    ("FooTests_to_Foo", "src/test/java/p/FooTests.java", java_test("FooTests", "@Test void t() { fail(); }\n"),
     {"samples": [("t", ["fail();"])], "focal_path": "src/main/java/p/Foo.java", "focal_match": "name"}),
    ("FooIT_to_Foo", "src/test/java/p/FooIT.java", java_test("FooIT", "@Test void t() { fail(); }\n"),
     {"samples": [("t", ["fail();"])], "focal_path": "src/main/java/p/Foo.java", "focal_match": "name"}),
    ("camel_prefix_needs_a_reference", "src/test/java/p/FooParsingTest.java", java_test("FooParsingTest", """
        @Test void t() { assertEquals(0, new Foo().x); }
        """),
     {"samples": [("t", ["assertEquals(0, new Foo().x);"])], "focal_path": "src/main/java/p/Foo.java",
      "focal_match": "name_prefix"}),
    ("fallback_most_referenced_class", "src/test/java/p/MiscTest.java", java_test("MiscTest", """
        @Test void t() { Bar a = new Bar(); Bar b = new Bar(); assertNotSame(a, new Foo()); }
        """),
     {"samples": [("t", ["assertNotSame(a, new Foo());"])], "focal_path": "src/main/java/p/Bar.java",
      "focal_match": "fallback"}),
    ("no_focal_skipped", "src/test/java/p/MiscTest.java", java_test("MiscTest", """
        @Test void t() { assertEquals(2, 1 + 1); }
        """),
     {"samples": [], "skips": {"no_focal": 1}}),
    ("same_package_preferred", "src/test/java/q/FooTest.java", java_test("FooTest", """
        @Test void t() { assertNotNull(new Foo()); }
        """, package="q"),
     {"samples": [("t", ["assertNotNull(new Foo());"])], "focal_path": "src/main/java/q/Foo.java"}),
]
BASE_FILES = {"src/main/java/p/Foo.java": FOO, "src/main/java/p/Bar.java": BAR,
              "src/main/java/q/Foo.java": FOO.replace("package p;", "package q;")}


@pytest.mark.parametrize("case_id, test_path, source, expected", CASES, ids=[c[0] for c in CASES])
def test_mining_cases(tmp_path, case_id, test_path, source, expected):
    records, stats = mine(tmp_path, {**BASE_FILES, test_path: source})
    assert [(r["test_method"], r["assertions"]) for r in records] == expected["samples"]
    assert {reason: n for reason, n in stats.skips.items() if n} == expected.get("skips", {})
    for record in records:
        assert record["test_path"] == test_path and record["repo"] == "repo"
        assert record["test_method_masked"].count("// <ASSERTION_PLACEHOLDER>") == len(record["assertions"])
        assert "focal_path" not in expected or record["focal_path"] == expected["focal_path"]
        assert "focal_match" not in expected or record["focal_match"] == expected["focal_match"]
        assert record["focal_file"] == (tmp_path / record["focal_path"]).read_text()
        if record["test_method"] in expected.get("masked", {}):
            assert record["test_method_masked"] == expected["masked"][record["test_method"]]


def test_junit3_through_repo_base_classes(tmp_path):
    base = java_test("AbstractFooTester", "public void testInherited() { assertTrue(true); }\n",
                     extends="extends TestCase ")
    notjunit3 = java_test("PlainBaseTestCase", "", extends="")  # named *TestCase but no TestCase above it
    files = {**BASE_FILES, "src/test/java/p/AbstractFooTester.java": base,
             "src/test/java/p/PlainBaseTestCase.java": notjunit3,
             "src/test/java/p/FooTest.java": java_test("FooTest", "public void testA() { assertNull(null); }\n",
                                                       extends="extends AbstractFooTester "),
             "src/test/java/p/FooOtherTest.java": java_test("FooOtherTest", "public void testB() { fail(); }\n",
                                                            extends="extends PlainBaseTestCase ")}
    records, stats = mine(tmp_path, files)
    assert [r["test_method"] for r in records] == ["testA"]
    assert stats.counts["test_methods_junit3"] == 2  # testB's class never reaches TestCase
    assert stats.skips["no_focal"] == 1  # AbstractFooTester names and references no repo class


def test_license_header_stripped_from_focal_only(tmp_path):
    licensed = "/*\n * Copyright 2020 Someone\n * Licensed under the Apache License.\n */\n\n" + FOO
    kept = "/* Not a legal notice. */\npackage p;\n\npublic class Bar {}\n"
    test = "// Copyright test header\n" + java_test("FooTest", "@Test void t() { assertNotNull(new Foo()); }\n")
    records, _ = mine(tmp_path, {"src/main/java/p/Foo.java": licensed, "src/main/java/p/Bar.java": kept,
                                 "src/test/java/p/FooTest.java": test})
    assert records[0]["focal_file"] == FOO
    assert strip_license_header(kept) == kept


@pytest.mark.parametrize("text, expected", [
    ("/* Licensed to the ASF */\npackage a;\nclass A {}\n", "package a;\nclass A {}\n"),
    ("// Copyright 2007 Google\n// All rights reserved.\n\npackage a;\n", "package a;\n"),
    ("/* Copyright */\n/** Javadoc of A. */\nclass A {}\n", "/* Copyright */\n/** Javadoc of A. */\nclass A {}\n"),
    ("/* Copyright */\nimport x.Y;\n", "import x.Y;\n"),
    ("package a;\n/* License */\n", "package a;\n/* License */\n"),
])
def test_strip_license_header(text, expected):
    assert strip_license_header(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("assertEquals(1,\n        2);", "assertEquals(1, 2);"),
    ('assertEquals("a \\"  b",\t x);', 'assertEquals("a \\"  b", x);'),
    ("assertTrue(x); // trailing", "assertTrue(x); /* trailing */"),
    ("assertEquals('\\'', c);", "assertEquals('\\'', c);"),
])
def test_one_line(text, expected):
    assert one_line(text) == expected


@pytest.mark.parametrize("name, expected", [
    ("FooTest", ["Foo"]), ("FooTests", ["Foo"]), ("FooIT", ["Foo"]), ("FooTestCase", ["Foo"]),
    ("TestFoo", ["Foo"]), ("TestFoo_Bar", ["Foo_Bar", "Foo"]), ("Foo_BarTest", ["Foo_Bar", "Foo"]),
    ("Testing", []),
])
def test_focal_name_candidates(name, expected):
    assert focal_name_candidates(name) == expected


def test_duplicates_removed_and_counted(tmp_path):
    method = "@Test void t() { assertEquals(1, new Foo().x); }\n"
    records, stats = mine(tmp_path, {**BASE_FILES,
                                     "src/test/java/p/FooTest.java": java_test("FooTest", method),
                                     "android/src/test/java/p/FooTest.java": java_test("FooTest", method)})
    assert len(records) == 1 and stats.skips["duplicate"] == 1


def test_exclude_glob_counts_files(tmp_path):
    test = java_test("FooTest", "@Test void t() { fail(); }\n")
    files = {**BASE_FILES, "src/test/java/p/FooTest.java": test, "android/src/test/java/p/FooTest.java": test}
    records, stats = mine(tmp_path, files, exclude=["repo/android/*"])
    assert [r["test_path"] for r in records] == ["src/test/java/p/FooTest.java"]
    assert stats.counts["files_excluded"] == 1


def _split_fixture(tmp_path, n_files=30):
    files = dict(BASE_FILES)
    for i in range(n_files):
        body = "".join(f"@Test void t{j}() {{ assertEquals({i}, new Foo().x + {j}); }}\n"
                       for j in range(1 + i % 4))
        files[f"src/test/java/p/Foo{i}Test.java"] = java_test(f"Foo{i}Test", body)
        if i % 5 == 0:  # a mirrored copy (guava android/ style) must land in the same split
            mirror = java_test(f"Foo{i}Test", body + "@Test void x() { fail(); }\n")
            files[f"android/src/test/java/p/Foo{i}Test.java"] = mirror
    records, _ = mine(tmp_path, files)
    return records


def test_split_keeps_each_test_file_in_one_split(tmp_path):
    records = _split_fixture(tmp_path)
    train, val = split_records(records, 0.2, seed=1)
    assert len(train) + len(val) == len(records) and 0 < len(val) <= round(0.2 * len(records))
    package_paths = lambda rs: {r["test_path"].replace("android/", "") for r in rs}
    assert not package_paths(train) & package_paths(val)
    assert split_records(records, 0.2, seed=1) == (train, val)  # deterministic
    assert split_records(records, 0.2, seed=2) != (train, val)
    train_repo, val_repo = split_records(records, 0.2, seed=1, split_by="repo")
    assert (len(train_repo), len(val_repo)) == (len(records), 0)  # one repo cannot be split


def test_cli_in_process(tmp_path, capsys):
    repo = write_repo(tmp_path / "myrepo", {
        **BASE_FILES,
        "src/test/java/p/FooTest.java": java_test("FooTest", "@Test void a() { assertEquals(1, 1); }\n"
                                                             "@Test void b() { new Foo(); }\n"),
        "src/test/java/p/BarTest.java": java_test("BarTest", "@Test void c() { assertNull(new Bar()); }\n")})
    out = tmp_path / "out" / "all.jsonl"
    split_dir = tmp_path / "split"
    assert make_dataset.main(["--java_root", str(repo), "--output", str(out), "--split_output_dir", str(split_dir),
                              "--val_fraction", "0.5", "--seed", "3"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["test_method"] for r in records) == ["a", "c"]
    assert {r["repo"] for r in records} == {"myrepo"}
    assert set(records[0]) >= {"focal_file", "test_method_masked", "assertions", "repo", "test_path",
                               "focal_path", "test_class", "test_method"}
    split_lines = [(split_dir / f).read_text().splitlines() for f in ("train.jsonl", "validation.jsonl")]
    assert sorted(map(len, split_lines)) == [1, 1]
    printed = capsys.readouterr().out
    assert re.search(r"^skipped_no_assertions +1$", printed, re.M) and "samples/s" in printed


def test_cli_rejects_missing_output(tmp_path):
    with pytest.raises(SystemExit) as error:
        make_dataset.main(["--java_root", str(tmp_path)])
    assert error.value.code == 2
