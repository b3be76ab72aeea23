"""The model input: the thesis's source layout, and token ids exactly as the tokenizer call gives them."""

import pytest
from util import JAVA_SNIPPETS, tiny_tokenizer

from assertdistill.data.encoding import FOCAL_PREFIX, TEST_PREFIX, InputEncoder


def test_source_text_follows_the_thesis_layout():
    encoder = InputEncoder(tiny_tokenizer(), 128, 16)
    focal = "public class Calculator { public int add(int a, int b) { return a + b; } }\n" * 10
    text = encoder.source_text(focal, "void testAdd() {}")
    assert text.startswith(FOCAL_PREFIX) and text.endswith(f"\n\n{TEST_PREFIX}void testAdd() {{}}")
    assert len(encoder.encode_source(focal, "void testAdd() {}")) <= 128
    assert focal.startswith(text[len(FOCAL_PREFIX): text.index("\n\n" + TEST_PREFIX)])  # a truncated prefix
    long_test = "void testAdd() { calculator.add(1, 2); }" * 20
    assert encoder.source_text(focal, long_test) == f"{TEST_PREFIX}{long_test}"  # no room for focal code
    assert encoder.source_text("  ", "t()") == f"{TEST_PREFIX}t()"


ADVERSARIAL_TEXTS = ["", " ", "\n\n\t  x", "é漢字😀 naïve\r\n", "a<mask>b </s> <pad>", "x" * 3000,
                     "    " * 200 + "return;", "int a = 1;\n" * 300, "\"\\\"escaped\\\"\" // comment"]


@pytest.mark.parametrize("text", ADVERSARIAL_TEXTS + JAVA_SNIPPETS)
def test_encoder_tokenizes_exactly_as_the_tokenizer_call(text):
    tokenizer = tiny_tokenizer()
    encoder = InputEncoder(tokenizer, 64, 16)
    for add_special_tokens in (True, False):
        for max_length in (None, 5, 64):
            options = {"truncation": True, "max_length": max_length} if max_length else {}
            expected = tokenizer(text, add_special_tokens=add_special_tokens, **options)["input_ids"]
            assert encoder._ids(text, add_special_tokens, max_length) == expected
    full = tokenizer(text * 3, add_special_tokens=False)["input_ids"]
    for count in (1, 7, 50, 400):
        assert encoder.first_tokens(text * 3, count) == full[:count]


def test_source_and_target_are_truncated_at_their_own_lengths():
    tokenizer = tiny_tokenizer()
    encoder = InputEncoder(tokenizer, 64, 16)
    long_text = "assertEquals(3, calculator.add(1, 2));\n" * 20
    assert encoder.encode_target(long_text) == tokenizer(long_text, truncation=True, max_length=16)["input_ids"]
    assert len(encoder.encode_source(long_text, long_text)) == 64
