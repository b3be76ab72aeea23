"""Parse one distillation record (docs/DATA_FORMAT.md): its fields, checked, as the thesis's loader reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..core.schema import ROW_LOCATION_KEYS
from .archive import OversizeLine
from .jsonline import loads_record_line

FOCAL_FALLBACK_FIELDS = ("focal_file", "focal_method")
GROUND_TRUTH_FIELDS = ("original_target", "assertions")  # first non-null wins, as in the thesis's loader
TEACHER_TEXT_FIELDS = ("model_prediction", "predicted_assertions")
_SURROGATES = re.compile("[\ud800-\udfff]")  # in a str decoded from JSON, every one left is lone


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
    notes: tuple[str, ...] = ()  # what was worth knowing about a kept record (DataStats.notes keys)
    location: dict[str, str] = field(default_factory=dict)  # ROW_LOCATION_KEYS the record carries as strings


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


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in a string (a "\\ud800" escape decodes to one: not text), else None."""
    if text.isascii():  # O(1); hex strings are ASCII
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return text[error.start]
    return None


def _reject_lone_surrogate(name: str, text: str) -> None:
    """RecordError for a tokenized field holding a lone surrogate: no tokenizer (the thesis's neither) reads it."""
    surrogate = lone_surrogate(text)
    if surrogate is not None:
        raise RecordError("lone_surrogate", f"'{name}' holds the lone surrogate \\u{ord(surrogate):04x}, "
                                            f"which is not text")


def _replace_lone_surrogates(text: str) -> str:
    """The text with each lone surrogate replaced by U+FFFD (it cannot be printed or written as UTF-8)."""
    return _SURROGATES.sub("\ufffd", text)


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
    if not isinstance(entry, dict):
        raise RecordError("not_an_object", f"a record must be a JSON object, got {type(entry).__name__}")

    test_method = entry.get("test_method_masked")
    if test_method is None:
        raise RecordError("missing_test_method_masked", "no 'test_method_masked'")
    if not isinstance(test_method, str):
        raise RecordError("wrong_field_type", f"'test_method_masked' must be a string, "
                                              f"got {type(test_method).__name__}")
    _reject_lone_surrogate("test_method_masked", test_method)

    ground_truth = ground_truth_of(entry)
    _reject_lone_surrogate("ground truth", ground_truth)
    notes = ()
    try:
        teacher_text, teacher_text_script1 = teacher_texts_of(entry)
    except RecordError:
        if require_teacher:
            raise
        teacher_text = teacher_text_script1 = ""
    if any(lone_surrogate(text) is not None for text in (teacher_text, teacher_text_script1)):  # scored, not tokenized
        teacher_text, teacher_text_script1 = map(_replace_lone_surrogates, (teacher_text, teacher_text_script1))
        notes = ("teacher_text_lone_surrogate_replaced",)

    compressed_logits = entry.get("compressed_logits")  # required even at alpha 0, as by the thesis
    if compressed_logits is None and (require_teacher or need_logits):
        raise RecordError("missing_compressed_logits", "no 'compressed_logits'")
    if compressed_logits is not None and not isinstance(compressed_logits, dict):
        raise RecordError("wrong_field_type", f"'compressed_logits' must be an object, "
                                              f"got {type(compressed_logits).__name__}")

    focal_names = (focal_field,) + tuple(name for name in FOCAL_FALLBACK_FIELDS if name != focal_field)
    focal = _first_present(entry, focal_names)
    focal_code = focal[1] if focal and isinstance(focal[1], str) else ""
    _reject_lone_surrogate(focal[0] if focal else "focal code", focal_code)
    location = {name: entry[name] for name in ROW_LOCATION_KEYS if isinstance(entry.get(name), str)}
    return Record(focal_code, test_method, ground_truth, teacher_text, teacher_text_script1,
                  compressed_logits if need_logits else None, notes, location)
