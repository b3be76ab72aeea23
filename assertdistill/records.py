"""Parse one distillation record (docs/DATA_FORMAT.md) and build the thesis's model input from it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .archive import OversizeLine
from .codec import HexBytes

FOCAL_PREFIX = "FOCAL CODE:\n"
TEST_PREFIX = "TEST METHOD:\n"
FOCAL_FALLBACK_FIELDS = ("focal_file", "focal_method")
GROUND_TRUTH_FIELDS = ("original_target", "assertions")  # first non-null wins, as in the thesis's loader
TEACHER_TEXT_FIELDS = ("model_prediction", "predicted_assertions")
LARGE_STRING_BYTES = 1 << 16  # JSON strings this long (the hex logits) are sliced out, not scanned
_PLACEHOLDER = "\x00large string {}\x00"  # decoded form; written as \u0000 escapes, never in real data


class RecordError(ValueError):
    """A record that cannot be used; `reason` is the counter key it is skipped under."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Record:
    """The fields of one usable record."""

    focal_code: str
    test_method: str
    ground_truth_text: str
    teacher_text: str  # the teacher's lines joined with newlines (corrected metrics, strict match, t_vs_gt)
    teacher_text_script1: str  # str() of the teacher's field, as the thesis's loader made it (*_s_vs_t_script1)
    compressed_logits: dict | None


@dataclass
class DataStats:
    """Counts of one pass over a data file: records used and records skipped, by reason."""

    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # kept records with something worth knowing

    def merge(self, other: "DataStats") -> None:
        """Add another pass's (or worker's) counts to these."""
        self.used += other.used
        self.skipped.update(other.skipped)
        self.notes.update(other.notes)

    def as_dict(self) -> dict:
        """Plain-JSON form for the summary."""
        return {"records_used": self.used, "records_skipped": sum(self.skipped.values()),
                "skipped_by_reason": dict(sorted(self.skipped.items())), "notes": dict(sorted(self.notes.items()))}

    def describe(self) -> str:
        """One line: used, skipped and why."""
        text = f"{self.used} records used, {sum(self.skipped.values())} skipped"
        if self.skipped:
            text += " (" + ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items())) + ")"
        if self.notes:
            text += "; " + ", ".join(f"{note}: {count}" for note, count in sorted(self.notes.items()))
        return text


def _first_present(entry: dict, names: tuple[str, ...]) -> tuple[str, Any] | None:
    for name in names:
        if entry.get(name) is not None:
            return name, entry[name]
    return None


def ground_truth_of(entry: dict) -> str:
    """The ground truth as the thesis's loader builds it; RecordError where that loader gives up.

    original_target: a list joined with newlines (items must be strings), anything else str();
    else assertions: str() of each item joined with newlines (a string is iterated by character).
    A None value falls through to the next field.
    """
    if not any(name in entry for name in GROUND_TRUTH_FIELDS):
        raise RecordError("missing_ground_truth", "no 'original_target' or 'assertions'")
    target = entry.get("original_target")
    if target is not None:
        if not isinstance(target, list):
            return str(target)
        if not all(isinstance(item, str) for item in target):
            raise RecordError("wrong_field_type", "'original_target' is a list with non-string items")
        return "\n".join(target)
    assertions = entry.get("assertions")
    if assertions is None:
        raise RecordError("missing_ground_truth", "'original_target' and 'assertions' are null")
    if not isinstance(assertions, (list, dict, str)):
        raise RecordError("wrong_field_type", f"'assertions' must be a list, got {type(assertions).__name__}")
    return "\n".join(str(item) for item in assertions)


def teacher_texts_of(entry: dict) -> tuple[str, str]:
    """(lines joined with newlines, str() as the thesis's loader) of model_prediction, else predicted_assertions.

    A None value falls through to the next field; a list's non-string items are joined as their str().
    """
    if not any(name in entry for name in TEACHER_TEXT_FIELDS):
        raise RecordError("missing_teacher_prediction", "no 'model_prediction' or 'predicted_assertions'")
    teacher = _first_present(entry, TEACHER_TEXT_FIELDS)
    if teacher is None:
        raise RecordError("missing_teacher_prediction", "'model_prediction' and 'predicted_assertions' are null")
    value = teacher[1]
    joined = "\n".join(str(item) for item in value) if isinstance(value, list) else str(value)
    return joined, str(value)


def _large_string_spans(line: bytes) -> list[tuple[int, int]] | None:
    """(start, end) of the contents of the long JSON strings without escapes; None if a quote is unpaired."""
    spans, position = [], 0
    while (start := line.find(b'"', position)) >= 0:  # outside strings, every quote opens one
        end = start
        while True:
            end = line.find(b'"', end + 1)
            if end < 0:
                return None
            backslashes = 0
            while line[end - 1 - backslashes] == 0x5C:
                backslashes += 1
            if backslashes % 2 == 0:  # an unescaped quote closes the string
                break
        if end - start - 1 >= LARGE_STRING_BYTES and line.find(b"\\", start + 1, end) < 0:
            spans.append((start + 1, end))
        position = end + 1
    return spans


def _restore_large_strings(entry, spans: dict[str, tuple[int, int]], view: memoryview, lazy_hex: bool) -> int:
    """Put the large strings back in place of their placeholders; returns how many were replaced.

    With lazy_hex, a large string under the key "data" (the logits' hex) stays in the line as HexBytes.
    """
    replaced, pending = 0, [entry]
    while pending:
        container = pending.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            if isinstance(value, str) and value in spans:
                start, end = spans[value]
                # str(view[a:b]) decodes in place; line[a:b] would first copy 33 MB
                container[key] = HexBytes(view[start:end]) if lazy_hex and key == "data" \
                    else str(view[start:end], "ascii")
                replaced += 1
            elif isinstance(value, (dict, list)):
                pending.append(value)
    return replaced


def loads_record_line(line: bytes | str, lazy_hex: bool = False):
    """json.loads of one JSONL line, fast for records that carry MBs of hex.

    Python's JSON scanner checks every character of a 33 MB hex string; here each string of at least
    LARGE_STRING_BYTES without escapes is cut out with two memchr-speed searches, the small rest is
    parsed, and the strings are put back. The result equals json.loads(line); so do the errors, since
    anything unusual (non-UTF-8, non-ASCII large strings, a parse error) falls back to json.loads.
    Unlike json.loads, control characters inside such a large string are not rejected. With lazy_hex,
    large "data" strings come back as HexBytes views of the line (the codec reads them like str),
    which saves decoding 33 MB per record into a str that training reads only the start of.
    """
    if (not isinstance(line, bytes) or len(line) < LARGE_STRING_BYTES
            or json.detect_encoding(line[:4]) != "utf-8"):
        return json.loads(line)
    spans = _large_string_spans(line)
    if not spans:
        return json.loads(line)
    pieces, last = [], 0
    for index, (start, end) in enumerate(spans):
        pieces += [line[last:start], _PLACEHOLDER.format(index).replace("\x00", "\\u0000").encode()]
        last = end
    pieces.append(line[last:])
    placeholders = {_PLACEHOLDER.format(index): span for index, span in enumerate(spans)}
    try:
        entry = json.loads(b"".join(pieces))
        restored = isinstance(entry, (dict, list)) and \
            _restore_large_strings(entry, placeholders, memoryview(line), lazy_hex) == len(placeholders)
    except (ValueError, UnicodeDecodeError):
        return json.loads(line)  # raises the error json.loads gives for the whole line
    if not restored:
        return json.loads(line)  # a placeholder used as a key or repeated: take the slow path
    return entry


def _reject_lone_surrogates(entry) -> None:
    """RecordError for a string (key or value) holding a lone surrogate escape ("\\ud800"): not text."""
    pending = [entry] if isinstance(entry, (dict, list)) else []
    while pending:
        container = pending.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            for text in (key, value):
                if isinstance(text, str) and not text.isascii():  # isascii is O(1); hex strings are ASCII
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError as error:
                        surrogate = text[error.start]
                        raise RecordError("lone_surrogate", f"a string holds the lone surrogate "
                                                            f"\\u{ord(surrogate):04x}, which is not text") from None
            if isinstance(value, (dict, list)):
                pending.append(value)


def parse_record(line: bytes | str, focal_field: str, need_logits: bool, lazy_hex: bool = False,
                 require_teacher: bool = True) -> Record:
    """Decode one JSONL line into a Record, or raise RecordError with a reason (lazy_hex: see loads_record_line).

    require_teacher (the thesis's rule) skips records without teacher text or logits; without it (plain
    fine-tuning, this suite only) such a record is kept with an empty teacher text, and logits are required
    only when need_logits.
    """
    if isinstance(line, OversizeLine):
        raise RecordError("too_large", str(line))
    try:
        entry = loads_record_line(line, lazy_hex)
    except RecursionError:
        raise RecordError("too_deeply_nested", "JSON nested deeper than the parser's recursion limit") from None
    except UnicodeDecodeError as error:
        raise RecordError("invalid_utf8", f"not UTF-8 text ({error})") from None
    except ValueError as error:
        raise RecordError("invalid_json", f"invalid JSON ({error})") from None
    _reject_lone_surrogates(entry)
    if not isinstance(entry, dict):
        raise RecordError("not_an_object", f"a record must be a JSON object, got {type(entry).__name__}")

    test_method = entry.get("test_method_masked")
    if test_method is None:
        raise RecordError("missing_test_method_masked", "no 'test_method_masked'")
    if not isinstance(test_method, str):
        raise RecordError("wrong_field_type", f"'test_method_masked' must be a string, "
                                              f"got {type(test_method).__name__}")

    ground_truth = ground_truth_of(entry)
    try:
        teacher_text, teacher_text_script1 = teacher_texts_of(entry)
    except RecordError:
        if require_teacher:
            raise
        teacher_text = teacher_text_script1 = ""

    compressed_logits = entry.get("compressed_logits")  # required even at alpha 0, as by the thesis
    if compressed_logits is None and (require_teacher or need_logits):
        raise RecordError("missing_compressed_logits", "no 'compressed_logits'")
    if compressed_logits is not None and not isinstance(compressed_logits, dict):
        raise RecordError("wrong_field_type", f"'compressed_logits' must be an object, "
                                              f"got {type(compressed_logits).__name__}")

    focal_names = (focal_field,) + tuple(name for name in FOCAL_FALLBACK_FIELDS if name != focal_field)
    focal = _first_present(entry, focal_names)
    focal_code = focal[1] if focal and isinstance(focal[1], str) else ""
    return Record(focal_code, test_method, ground_truth, teacher_text, teacher_text_script1,
                  compressed_logits if need_logits else None)


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

    def __init__(self, tokenizer, max_source_length: int, max_target_length: int):
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

    def source_text(self, focal_code: str, test_method: str) -> str:
        """FOCAL CODE + focal truncated to the token budget left by the test method, then TEST METHOD."""
        test_text = f"{TEST_PREFIX}{test_method}"
        focal_text = self.focal_prefix(focal_code, test_method)
        return f"{FOCAL_PREFIX}{focal_text}\n\n{test_text}" if focal_text else test_text

    def focal_prefix(self, focal_code: str, test_method: str) -> str:
        """The part of the focal code that fits the source budget next to the test method ("" if none)."""
        if not focal_code.strip():
            return ""
        test_length = len(self._ids(f"{TEST_PREFIX}{test_method}", True))
        focal_budget = self.max_source_length - test_length - self.overhead_length
        if test_length >= self.max_source_length - self.overhead_length - 10 or focal_budget <= 0:
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

    def encode_source(self, focal_code: str, test_method: str) -> list[int]:
        """Token ids of the input text, truncated to max_source_length, unpadded."""
        text = self.source_text(focal_code, test_method)
        return self._ids(text, True, self.max_source_length)

    def encode_target(self, ground_truth_text: str) -> list[int]:
        """Token ids of the target (with end-of-sequence), truncated to max_target_length, unpadded."""
        return self._ids(ground_truth_text, True, self.max_target_length)
