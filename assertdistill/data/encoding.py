"""Build the thesis's model input text from a record's fields and tokenize sources and targets."""

from __future__ import annotations

FOCAL_PREFIX = "FOCAL CODE:\n"
TEST_PREFIX = "TEST METHOD:\n"
# --retrieval_augment K: after the thesis's input, K retrieved examples, each its assertion then its test method
# (a truncated example keeps its assertion). The examples get at most EXAMPLES_SHARE of the source budget in all,
# split evenly; the thesis's input (focal code and test method, cut as the thesis cuts them) gets the rest.
EXAMPLE_PREFIX = "\n\nSIMILAR ASSERTION:\n"
EXAMPLE_TEST_PREFIX = "\nSIMILAR TEST:\n"
EXAMPLES_SHARE = 0.25


def _private_backend(tokenizer):
    """A private copy of a fast tokenizer's Rust tokenizer (padding and truncation off), or None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    private = Tokenizer.from_str(backend.to_str())
    private.no_padding()
    private.no_truncation()
    return private


class InputEncoder:
    """Builds the thesis input text and token ids for sources and targets."""

    def __init__(self, tokenizer, max_source_length: int, max_target_length: int, examples: int = 0):
        self.examples = examples  # retrieved (test method, assertion) pairs appended to the input (0: the thesis's)
        self.tokenizer = tokenizer
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self._backend = _private_backend(tokenizer)
        self.overhead_length = len(self._ids(f"{FOCAL_PREFIX}\n\n{TEST_PREFIX}", False)) + 1  # + end of sequence

    def _ids(self, text: str, add_special_tokens: bool, max_length: int | None = None) -> list[int]:
        """Token ids as tokenizer(text, ...)["input_ids"] gives them, straight from the Rust tokenizer when
        there is one (the Python wrapper's per-call conversion cost more than the tokenizing)."""
        if self._backend is None:
            options = {"truncation": True, "max_length": max_length} if max_length is not None else {}
            return self.tokenizer(text, add_special_tokens=add_special_tokens, **options)["input_ids"]
        if max_length is None:
            self._backend.no_truncation()
        else:
            self._backend.enable_truncation(max_length)
        return self._backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids  # frees the GIL

    def source_text(self, focal_code: str, test_method: str, budget: int | None = None) -> str:
        """FOCAL CODE + focal truncated to the token budget left by the test method, then TEST METHOD.

        budget: the source's token budget (max_source_length unless examples take part of it).
        """
        test_text = f"{TEST_PREFIX}{test_method}"
        focal_text = self.focal_prefix(focal_code, test_method, budget)
        return f"{FOCAL_PREFIX}{focal_text}\n\n{test_text}" if focal_text else test_text

    def focal_prefix(self, focal_code: str, test_method: str, budget: int | None = None) -> str:
        """The part of the focal code that fits the source budget next to the test method ("" if none)."""
        if not focal_code.strip():
            return ""
        budget = self.max_source_length if budget is None else budget
        test_length = len(self._ids(f"{TEST_PREFIX}{test_method}", True))
        focal_budget = budget - test_length - self.overhead_length
        if test_length >= budget - self.overhead_length - 10 or focal_budget <= 0:
            return ""
        focal_ids = self.first_tokens(focal_code, focal_budget)
        return self.tokenizer.decode(focal_ids, skip_special_tokens=True)

    def first_tokens(self, text: str, count: int) -> list[int]:
        """The first `count` token ids of `text`, without tokenizing all of a long text.

        A prefix of the text is tokenized; every pre-tokenizer piece but the prefix's last one is split
        exactly as in the full text, so tokens that end before that last piece are final. The prefix
        doubles until enough final tokens are found (or it is the whole text).
        """
        pre_tokenizer = getattr(self._backend, "pre_tokenizer", None)
        prefix_chars = count * 8
        while pre_tokenizer is not None and prefix_chars < len(text):
            prefix = text[:prefix_chars]
            pieces = pre_tokenizer.pre_tokenize_str(prefix)
            last_piece_start = pieces[-1][1][0] if pieces else 0
            self._backend.no_truncation()
            encoded = self._backend.encode_batch([prefix], add_special_tokens=False)[0]
            final = sum(1 for _, end in encoded.offsets if end <= last_piece_start)
            if final >= count:
                return encoded.ids[:count]
            prefix_chars *= 2
        return self._ids(text, False, count)

    def encode_source(self, focal_code: str, test_method: str, retrieved=()) -> list[int]:
        """Token ids of the input text, truncated to max_source_length, unpadded.

        retrieved: (test method, assertion) pairs, best first; the first `examples` of them are appended
        (augmented_source_ids). With examples = 0 (or none retrieved) the input is the thesis's.
        """
        examples = list(retrieved)[: self.examples]
        if not examples:
            text = self.source_text(focal_code, test_method)
            return self._ids(text, True, self.max_source_length)
        return self.augmented_source_ids(focal_code, test_method, examples)

    def example_ids(self, examples) -> list[int]:
        """The examples' token ids: each within its share of EXAMPLES_SHARE of the budget, assertion first."""
        each = int(self.max_source_length * EXAMPLES_SHARE) // self.examples
        ids = []
        for example_test, example_assertion in examples:
            text = f"{EXAMPLE_PREFIX}{example_assertion}{EXAMPLE_TEST_PREFIX}{example_test}"
            ids += self._ids(text, False, each)
        return ids

    def augmented_source_ids(self, focal_code: str, test_method: str, examples) -> list[int]:
        """The thesis's input (with its special tokens) cut to the budget the examples leave, the examples placed
        before its end-of-sequence token."""
        example_ids = self.example_ids(examples)
        budget = self.max_source_length - len(example_ids)
        own = self._ids(self.source_text(focal_code, test_method, budget), True, budget)
        end = self._ids("", True)[-1:]  # the end-of-sequence token the tokenizer appends
        if end and own[-1:] == end:
            return own[:-1] + example_ids + end
        return own + example_ids

    def encode_target(self, ground_truth_text: str) -> list[int]:
        """Token ids of the target (with end-of-sequence), truncated to max_target_length, unpadded."""
        return self._ids(ground_truth_text, True, self.max_target_length)
