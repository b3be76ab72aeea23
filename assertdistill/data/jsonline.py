"""json.loads of one JSONL line, fast for lines that carry MBs of hex (the distillation records)."""

from __future__ import annotations

import json

from ..codec.hexframes import HexBytes

LARGE_STRING_BYTES = 1 << 16  # JSON strings this long (the hex logits) are sliced out, not scanned
_PLACEHOLDER = "\x00large string {}\x00"  # decoded form; written as \u0000 escapes, never in real data


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
    replaced = 0
    for container, key, value in _nested_items(entry):
        if isinstance(value, str) and value in spans:
            start, end = spans[value]
            # str(view[a:b]) decodes in place; line[a:b] would first copy 33 MB
            container[key] = HexBytes(view[start:end]) if lazy_hex and key == "data" else str(view[start:end], "ascii")
            replaced += 1
    return replaced


def _nested_items(entry):
    """(container, key, value) of every item of the dicts and lists in a decoded JSON value, depth first.

    A container may replace the value of the item just yielded (not add or remove items).
    """
    pending = [entry] if isinstance(entry, (dict, list)) else []
    while pending:
        container = pending.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, value in items:
            yield container, key, value
            if isinstance(value, (dict, list)):
                pending.append(value)


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
