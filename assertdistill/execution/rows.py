"""Predictions rows read with bounds: every hostile row is one counted bad_input outcome with its line number."""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path, PurePosixPath

from ..core.schema import (
    EXEC_CANDIDATE,
    EXEC_COMPILED,
    EXEC_DETAIL,
    EXEC_KILLED,
    EXEC_KILLED_MUTANTS,
    EXEC_MUTANTS,
    EXEC_OUTCOME,
    EXEC_PASSED,
    EXEC_REASON,
    EXEC_SECONDS,
    EXEC_STATUS,
    EXEC_TEXT,
    ROW_FOCAL_PATH,
    ROW_GROUND_TRUTH,
    ROW_INDEX,
    ROW_REPO,
    ROW_TEST_METHOD,
    ROW_TEST_PATH,
    STATUS_BAD_INPUT,
)
from ..data.records import RecordError, lone_surrogate

LOCATION_FIELDS = (ROW_REPO, ROW_TEST_PATH, ROW_TEST_METHOD)
DETAIL_CHARS = 300
MAX_ROW_BYTES = 8 << 20  # a predictions row holds a few short texts; longer lines are not read into memory
MAX_DEPTH = 32  # nesting of JSON arrays and objects (a row is flat)
MAX_NUMBER_CHARS = 64  # digits of one JSON number (int() of 5,000 digits raises; a row needs none this long)
_OPENERS, _CLOSERS = frozenset(b"[{"), frozenset(b"]}")


class BadRow(RecordError):
    """A predictions row that cannot be evaluated: `reason` is counted, the message says why."""


@dataclass
class ExecutionRecord:
    """One predictions row to evaluate: its position, location and candidate texts."""

    index: int
    location: dict
    texts: dict[str, str]
    focal_path: str | None


def result_row(index, location: dict, candidate: str, text, status: str, reason: str | None = None) -> dict:
    """One execution.jsonl row with nothing run yet."""
    return {ROW_INDEX: index, **location, EXEC_CANDIDATE: candidate, EXEC_TEXT: text, EXEC_STATUS: status,
            EXEC_REASON: reason, EXEC_COMPILED: None, EXEC_PASSED: None, EXEC_OUTCOME: None, EXEC_DETAIL: None,
            EXEC_MUTANTS: None, EXEC_KILLED: None, EXEC_KILLED_MUTANTS: None, EXEC_SECONDS: 0.0}


def bad_rows(index, location: dict, candidates, reason: str, detail: str) -> list[dict]:
    """One bad_input row per candidate of a record that could not be read."""
    rows = [result_row(index, location, candidate, None, STATUS_BAD_INPUT, reason) for candidate in candidates]
    for row in rows:
        row[EXEC_DETAIL] = detail[:DETAIL_CHARS]
    return rows


def _depth(text: str) -> int:
    """The deepest nesting of JSON arrays/objects in `text` (brackets inside strings not counted)."""
    data = text.encode("utf-8", "surrogatepass")
    if sum(data.count(b) for b in b"[{") <= MAX_DEPTH:
        return 0  # too few brackets to nest too deep
    steps, in_string, escaped = [], False, False
    for byte in data:
        if in_string:
            in_string = escaped or byte != 0x22
            escaped = not escaped and byte == 0x5C
        elif byte == 0x22:
            in_string = True
        else:
            steps.append(1 if byte in _OPENERS else -1 if byte in _CLOSERS else 0)
    return max(accumulate(steps), default=0)


def _bounded_number(text: str):
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRow("number_too_long", f"a JSON number of {len(text)} characters")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _lines(path: Path):
    """(line number, bytes) of each line, or (line number, None) for one longer than MAX_ROW_BYTES (skipped)."""
    with open(path, "rb") as stream:
        lineno = 0
        while True:
            line = stream.readline(MAX_ROW_BYTES + 1)
            if not line:
                return
            lineno += 1
            if len(line) > MAX_ROW_BYTES and not line.endswith(b"\n"):
                while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                yield lineno, None
                continue
            yield lineno, line


def parse_row(line: bytes | None) -> dict:
    """The JSON object of one line, read with bounds; BadRow when it is not one."""
    if line is None:
        raise BadRow("too_large", f"a line longer than {MAX_ROW_BYTES} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRow("not_utf8", f"not UTF-8 ({error.reason} at byte {error.start})") from None
    if _depth(text) > MAX_DEPTH:
        raise BadRow("too_deeply_nested", f"JSON nested deeper than {MAX_DEPTH}")
    try:
        row = json.loads(text, parse_int=_bounded_number, parse_float=_bounded_number)
    except RecursionError:
        raise BadRow("too_deeply_nested", "JSON nested deeper than the parser's recursion limit") from None
    except json.JSONDecodeError as error:
        raise BadRow("unparsable_row", error.msg) from None
    if not isinstance(row, dict):
        raise BadRow("unparsable_row", f"not an object but {type(row).__name__}")
    return row


def _inside(base: Path, relative: str, what: str) -> None:
    """BadRow(path_outside_java_root) unless `relative` is a plain relative path resolving inside base."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or "\0" in relative:
        raise BadRow("path_outside_java_root", f"{what} {relative!r} is not a relative path below it")
    if not (base / relative).resolve().is_relative_to(base.resolve()):
        raise BadRow("path_outside_java_root", f"{what} {relative!r} leads outside {base} through a symbolic link")


def _text(row: dict, name: str, required: bool) -> str | None:
    value = row.get(name)
    if value is None and not required:
        return None
    if value is None or (required and value == ""):
        raise BadRow("missing_location" if name in LOCATION_FIELDS else "missing_ground_truth", f"no {name}")
    if not isinstance(value, str):
        raise BadRow("wrong_field_type", f"{name} is a {type(value).__name__}, not a string")
    if lone_surrogate(value) is not None:
        raise BadRow("lone_surrogate", f"{name} holds a lone surrogate (\\u{ord(lone_surrogate(value)):04x})")
    return value


def to_record(index: int, row: dict, candidates: tuple[str, ...], java_root: Path | None) -> ExecutionRecord:
    """The record of one decoded row; BadRow when a field is missing, mistyped or points outside java_root."""
    location = {key: _text(row, key, True) for key in LOCATION_FIELDS}
    truth = _text(row, ROW_GROUND_TRUTH, True)
    texts = {name: _text(row, name, False) for name in candidates if name != ROW_GROUND_TRUTH}
    focal = row.get(ROW_FOCAL_PATH) if isinstance(row.get(ROW_FOCAL_PATH), str) else None
    if java_root is not None:
        _inside(java_root, location[ROW_REPO], ROW_REPO)
        project = java_root / location[ROW_REPO]
        if PurePosixPath(location[ROW_REPO]) == PurePosixPath("."):
            raise BadRow("path_outside_java_root", f"{ROW_REPO} {location[ROW_REPO]!r} is --java_root itself")
        _inside(project, location[ROW_TEST_PATH], ROW_TEST_PATH)
        if focal is not None:
            _inside(project, focal, ROW_FOCAL_PATH)
    present = {name: text for name, text in texts.items() if text is not None}
    return ExecutionRecord(index, location, {ROW_GROUND_TRUTH: truth, **present}, focal)


def read_rows(path: Path, candidates: tuple[str, ...], java_root: Path | None = None
              ) -> tuple[list[ExecutionRecord], list[dict]]:
    """(records to evaluate, result rows of bad input) from a predictions.jsonl-like file, in order.

    A record's index is its position among the file's non-blank lines (0, 1, ...); a bad row's detail
    starts with its line number.
    """
    records, bad = [], []
    index = -1
    for lineno, line in _lines(path):
        if line is not None and not line.strip():
            continue
        index += 1  # predictions.jsonl's own index; never a row's claim, which may repeat
        location = {}
        try:
            row = parse_row(line)
            location = {key: row[key] for key in LOCATION_FIELDS if isinstance(row.get(key), str)
                        and lone_surrogate(row[key]) is None}
            records.append(to_record(index, row, candidates, java_root))
        except BadRow as error:
            bad += bad_rows(index, location, candidates, error.reason, f"line {lineno}: {error}")
    return records, bad
