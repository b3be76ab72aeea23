"""The retrieval baseline: BM25 scores, determinism, the leakage rules, saving, and the augmented input's layout."""

from types import SimpleNamespace

import numpy as np
import pytest
from transformers import AutoTokenizer

from assertdistill.core.paths import DEMO
from assertdistill.data.encoding import EXAMPLE_PREFIX, EXAMPLES_SHARE, InputEncoder
from assertdistill.retrieval.baseline import TRAINING, VALIDATION, Retriever
from assertdistill.retrieval.code_tokens import code_tokens, subwords
from assertdistill.retrieval.index import Entry, IndexSettings, RetrievalIndex, RetrievalIndexError


def record(test_method, repo="r", test_path="src/test/ATest.java", focal=""):
    """A stand-in for data.records.Record: what a retriever reads."""
    location = {"repo": repo, "test_path": test_path} if test_path else {}
    return SimpleNamespace(test_method=test_method, location=location, focal_code=focal)


def test_bm25_scores_are_the_hand_computed_lucene_scores():
    # N = 3 documents, lengths 2, 1, 2 (average 5/3), k1 = 1.5, b = 0.75; query "foo bar".
    # idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)): foo (df 2) ln 1.6, bar (df 1) ln(8/3)
    # tf part = tf / (tf + k1 (1 - b + b |d| / avg)) = tf / (tf + 1.725) for a document of length 2
    index = RetrievalIndex.build([Entry("foo bar", "a;", "", 1), Entry("baz", "b;", "", 2),
                                  Entry("foo foo", "c;", "", 3)])
    expected = [(np.log(1.6) + np.log(8 / 3)) / (1 + 1.725), 0.0, np.log(1.6) * 2 / (2 + 1.725)]
    assert expected == pytest.approx([0.5324157, 0.0, 0.2523509], abs=1e-6)
    assert index.scores("foo bar") == pytest.approx(expected, abs=1e-5)
    assert index.search("foo bar", 3) == [0, 2]  # only entries sharing a token; best first


def test_ties_break_by_entry_number_and_searches_repeat_exactly():
    entries = [Entry(f"void t{i}() {{ shared(); }}", f"assert{i};", "", i) for i in range(6)]
    index = RetrievalIndex.build(entries)
    assert index.search("shared", 4) == [0, 1, 2, 3]
    assert index.search("shared", 4, excluded=np.array([1, 2])) == [0, 3, 4, 5]
    rebuilt = RetrievalIndex.build(entries)
    assert [index.search(f"t{i} shared", 3) for i in range(6)] == [rebuilt.search(f"t{i} shared", 3) for i in range(6)]


def test_code_tokens_split_identifiers_on_camel_and_snake_case():
    assert subwords("parseHTMLString_v2") == ["parse", "html", "string", "v", "2"]
    assert code_tokens("assertEquals(x_val, 42);", "words") == ["assertequals", "x_val", "42"]
    assert code_tokens("assertEquals(x_val, 42);", "subwords") == ["assert", "equals", "x", "val", "42"]
    assert code_tokens("getX(y)", "both") == ["getx", "get", "x", "y"]  # "y" is its own only part: once
    with pytest.raises(ValueError, match="tokenization"):
        code_tokens("x", "letters")


TRAIN = [Entry("void adds() { calc.add(1, 2); }", "assertEquals(3, sum);", "calc/src/test/CalcTest.java", 10),
         Entry("void adds() { calc.add(1, 2); }", "assertEquals(3, total);", "calc/src/test/OtherTest.java", 11),
         Entry("void parses() { parser.parse(text); }", "assertNotNull(tree);", "calc/src/test/ParserTest.java", 12),
         Entry("void adds() { calc.add(1, 2); }", "assertTrue(ok);", "", 13)]


def texts(hits):
    return [assertion for _, assertion in hits]


def test_a_validation_record_never_retrieves_from_its_own_test_file():
    retriever = Retriever(RetrievalIndex.build(TRAIN), VALIDATION, depth=4)
    hits = retriever(99, record("void adds() { calc.add(1, 2); }", "calc", "src/test/CalcTest.java"))
    assert "assertEquals(3, sum);" not in texts(hits)
    assert texts(hits)[:2] == ["assertEquals(3, total);", "assertTrue(ok);"]


def test_a_validation_duplicate_of_a_training_test_of_another_file_gets_its_assertion():
    retriever = Retriever(RetrievalIndex.build(TRAIN), VALIDATION, depth=1)
    hits = retriever(1, record("void parses() { parser.parse(text); }", "calc", "src/test/NewTest.java"))
    assert hits == [("void parses() { parser.parse(text); }", "assertNotNull(tree);")]


def test_a_training_record_never_retrieves_itself_or_its_own_test_file():
    retriever = Retriever(RetrievalIndex.build(TRAIN), TRAINING, depth=4)
    hits = retriever(10, record("void adds() { calc.add(1, 2); }", "calc", "src/test/CalcTest.java"))
    assert texts(hits)[:2] == ["assertEquals(3, total);", "assertTrue(ok);"]
    # a record naming no file is excluded from nothing by file, but never retrieves itself (its line)
    hits = retriever(13, record("void adds() { calc.add(1, 2); }", test_path=None))
    assert "assertTrue(ok);" not in texts(hits) and "assertEquals(3, sum);" in texts(hits)
    # a validation record naming no file sees every training record, its exact duplicate too
    hits = Retriever(RetrievalIndex.build(TRAIN), VALIDATION, depth=1)(13, record("void adds() { calc.add(1, 2); }",
                                                                                  test_path=None))
    assert texts(hits) == ["assertEquals(3, sum);"]


def test_nothing_left_to_retrieve_gives_no_hit():
    index = RetrievalIndex.build(TRAIN[:1])
    assert Retriever(index, VALIDATION, 1)(1, record("void adds() {}", "calc", "src/test/CalcTest.java")) == []
    with pytest.raises(RetrievalIndexError, match="no training record"):
        RetrievalIndex.build([])


def test_a_saved_index_loads_with_the_same_scores_and_entries(tmp_path):
    index = RetrievalIndex.build(TRAIN, IndexSettings(tokenization="subwords"))
    index.save(str(tmp_path / "retrieval_index"))
    loaded = RetrievalIndex.load(str(tmp_path / "retrieval_index"))
    assert loaded.entries == index.entries and loaded.settings == index.settings
    assert loaded.scores("calc add parse") == pytest.approx(index.scores("calc add parse"))
    with pytest.raises(RetrievalIndexError, match="not a readable retrieval index"):
        RetrievalIndex.load(str(tmp_path / "missing"))


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DEMO.student)


def test_augmented_input_is_the_thesis_input_then_the_examples_within_the_budget(tokenizer):
    plain = InputEncoder(tokenizer, 256, 16)
    augmented = InputEncoder(tokenizer, 256, 16, examples=2)
    focal, test = "class Calc { int add(int a, int b) { return a + b; } }" * 20, "void t() { calc.add(1, 2); }"
    examples = [("void u() { x(); }", "assertEquals(3, sum);"), ("void v() { y(); }", "assertTrue(ok);"),
                ("void w() {}", "assertNull(z);")]
    assert augmented.encode_source(focal, test, ()) == plain.encode_source(focal, test)  # nothing retrieved
    assert InputEncoder(tokenizer, 256, 16).encode_source(focal, test, examples) == plain.encode_source(focal, test)
    ids = augmented.encode_source(focal, test, examples)
    assert len(ids) <= 256 and ids[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.index("TEST METHOD:") < text.index("SIMILAR ASSERTION:")  # the thesis's input comes first
    assert text.count(EXAMPLE_PREFIX.strip()) == 2 and "assertNull" not in text  # K = 2 of the three
    assert "assertEquals(3, sum);" in text and "assertTrue(ok);" in text
    each = int(256 * EXAMPLES_SHARE) // 2
    assert len(augmented.example_ids(examples[:2])) <= 2 * each  # every example within its share


def test_a_long_example_is_cut_to_its_share_keeping_its_assertion(tokenizer):
    encoder = InputEncoder(tokenizer, 64, 16, examples=1)
    long_test = "void t() {" + " call();" * 200 + " }"
    ids = encoder.example_ids([(long_test, "assertTrue(ok);")])
    assert len(ids) == int(64 * EXAMPLES_SHARE)
    assert "assertTrue(ok);" in tokenizer.decode(ids)
    source = encoder.encode_source("", "void own() { x(); }", [(long_test, "assertTrue(ok);")])
    assert len(source) <= 64 and "void own()" in tokenizer.decode(source)


def test_a_resume_with_another_k_is_refused_by_name(tmp_path):
    import script
    from assertdistill.distill.checkpoint import CheckpointError, checkpoint_to_resume, save_checkpoint
    from assertdistill.distill.config import RunConfig

    flags = RunConfig.from_namespace(script.parse_args(["--retrieval_augment", "2"])).as_flags()
    save_checkpoint(str(tmp_path), 3, {}, {"args": flags}, save_total_limit=None)
    with pytest.raises(CheckpointError, match="--retrieval_augment"):
        checkpoint_to_resume("latest", str(tmp_path), {**flags, "retrieval_augment": 0})


def test_an_index_built_from_a_java_project_never_returns_the_file_being_filled(tmp_path):
    from pathlib import Path

    from assertdistill.retrieval import project_index

    project = Path(__file__).parent / "data" / "java_projects" / "calc"
    assert project_index.main(["--java_root", str(project), "--output_dir", str(tmp_path / "index")]) == 0
    index = RetrievalIndex.load(str(tmp_path / "index"))
    assert len(index) >= 2 and all(entry.test_file.endswith(".java") for entry in index.entries)
    own_file = index.entries[0].test_file
    retriever = Retriever(index, VALIDATION, depth=len(index))
    assert retriever.retrieve(index.entries[0].test_method, "")[0][1] == index.entries[0].assertion
    assert all(index.entries[hit].test_file != own_file
               for hit in index.search(index.entries[0].test_method, len(index), index.same_file(own_file)))


ADAPT_CASES = [
    # (retrieved assertion, retrieved test, current test, adapted)
    ("assertEquals(3, sum);", "void a() { int sum = calc.add(1, 2); }", "void b() { int total = calc.add(4, 5); }",
     "assertEquals(3, total);"),  # sum named the retrieved test's variable; 3 is in neither test: kept
    ("assertEquals(\"abc\", name.trim());", "void a() { String name = f(\"abc\"); }",
     "void b() { String label = f(\"xyz\"); }", "assertEquals(\"xyz\", label.trim());"),  # a literal for a literal
    ("assertTrue(list.isEmpty());", "void a() { list.clear(); }", "void b() { list.clear(); }",
     "assertTrue(list.isEmpty());"),  # every name is the current test's already
    ("assertEquals(\"abc\", s);", "void a() { s = \"abc\"; }", "void b() { s = g(); }",
     "assertEquals(\"abc\", s);"),  # no string in the current test: the literal is kept
]


@pytest.mark.parametrize("assertion, retrieved_test, test_method, adapted", ADAPT_CASES)
def test_adaptation_swaps_the_retrieved_tests_names_for_the_current_tests(assertion, retrieved_test, test_method,
                                                                          adapted):
    from assertdistill.retrieval.adapt import adapt_assertion

    assert adapt_assertion(assertion, retrieved_test, test_method) == adapted


def test_a_run_writes_the_baseline_its_index_and_a_k_student_generates_with_it(tmp_path):
    """End to end: training records of distinct test methods; a validation record duplicating training record 2's
    method from another test file gets record 2's assertion as retrieval_prediction; --retrieval_augment 1 is
    recorded; retrieval_index/ lands beside final_student_model/ and generate_assertions.py reads it."""
    import json

    from util import make_record, records_as_lines, save_tiny_model, tiny_run_flags, tiny_tokenizer, write_archive

    import generate_assertions
    import script

    vocab = len(tiny_tokenizer())
    methods = ["void adds() { calc.add(1, 2); }", "void parses() { parser.parse(text); }",
               "void sorts() { list.sort(order); }", "void opens() { file.open(path); }"]
    train = [dict(make_record(i, vocab), test_method_masked=f"@Test\n{method}\n// <ASSERTION_PLACEHOLDER>",
                  repo="lib", test_path=f"src/test/T{i}.java") for i, method in enumerate(methods)]
    val = [dict(make_record(50, vocab), test_method_masked=train[2]["test_method_masked"], repo="lib",
                test_path="src/test/Other.java"),
           dict(make_record(51, vocab), test_method_masked=train[1]["test_method_masked"], repo="lib",
                test_path="src/test/T1.java")]  # its own file's twin is excluded
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(train), records_as_lines(val))
    model_dir = save_tiny_model(str(tmp_path / "model"))
    assert script.main(tiny_run_flags(tmp_path, model_dir, flags, **{"--num_beams": 1,
                                                                       "--retrieval_augment": 1})) == 0
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["retrieval_prediction"] == train[2]["original_target"]
    assert rows[1]["retrieval_prediction"] != train[1]["original_target"]
    summary = json.loads((out / "distillation_summary.json").read_text())
    assert summary["args"]["retrieval_augment"] == 1
    assert "avg_accuracy_r_vs_gt_script1" in summary["final_evaluation_metrics"]
    assert "avg_strict_exact_match_r_vs_gt" in summary["confidence_intervals"]
    index = RetrievalIndex.load(str(out / "retrieval_index"))
    assert [entry.assertion for entry in index.entries] == [record["original_target"] for record in train]
    java = tmp_path / "src" / "test" / "java" / "p"
    java.mkdir(parents=True)
    (java / "FooTest.java").write_text("class FooTest {\n  @Test\n  void adds() {\n    calc.add(1, 2);\n"
                                       "    // <ASSERTION_PLACEHOLDER>\n  }\n}\n")
    final = str(out / "final_student_model")
    assert generate_assertions.main(["--model_dir", final, "--json", str(java / "FooTest.java")]) == 0
    assert generate_assertions.main(["--model_dir", final, "--retrieval_index", str(tmp_path / "none"),
                                     str(java / "FooTest.java")]) == 2  # a K = 1 student needs an index
