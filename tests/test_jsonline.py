"""The fast JSON line parser equals json.loads, errors included; lazy hex decodes the same."""

import json

import numpy as np
import pytest
from util import make_record

from assertdistill.codec.codec import compress_logits, decode_quantized
from assertdistill.codec.hexframes import CodecError, HexBytes
from assertdistill.data.jsonline import loads_record_line


def large_line(**extra):
    record = make_record(0, 300, padded_length=200)  # ~120 KB of hex: above LARGE_STRING_BYTES
    record["focal_file"] = 'String s = "a \\"quoted\\" word";\n\\\\ done "' + '"' * 3
    record.update(extra)
    return json.dumps(record).encode()


@pytest.mark.parametrize("line", [
    large_line(),
    large_line(model_type="\u00e9t\u00e9 \ud83d\ude00"),
    large_line(extra=["x" * 70000]),  # a second large string, in a list
    large_line(extra="\\u0000large string 0\\u0000"),  # looks like a placeholder once decoded
    large_line(extra={"\u0000large string 0\u0000": 1}),
    json.dumps(["y" * 70000, {"z": "w" * 70000}]).encode(),
    b'{"a": "' + b"0" * 70000 + b'\\n"}',  # an escape inside: json.loads does it
    b'{"a": "' + b"0" * 70000 + b'", "b": 1}\r\n',
])
def test_loads_record_line_equals_json_loads(line):
    assert loads_record_line(line) == json.loads(line)


@pytest.mark.parametrize("line", [
    b'{"a": "' + b"0" * 70000 + b'", "b": }',  # error after the large string
    b'{"a": "' + b"0" * 70000,  # unterminated
    b'{"a": "' + b"0" * 70000 + b'"} trailing',
])
def test_loads_record_line_raises_json_loads_error(line):
    with pytest.raises(ValueError) as expected:
        json.loads(line)
    with pytest.raises(ValueError, match=str(expected.value).replace("(", r"\(").replace(")", r"\)")):
        loads_record_line(line)


def test_lazy_hex_keeps_the_logits_in_the_line_and_decodes_the_same():
    logits = np.random.default_rng(0).normal(size=(1, 40, 3000)).astype(np.float32)
    compressed = compress_logits(logits, bits=8)
    line = json.dumps({"focal_file": "x" * 70000, "compressed_logits": compressed}).encode()
    eager, lazy = loads_record_line(line), loads_record_line(line, lazy_hex=True)
    hex_data = lazy["compressed_logits"]["data_encoded"]["data"]
    assert isinstance(hex_data, HexBytes) and str(hex_data) == eager["compressed_logits"]["data_encoded"]["data"]
    assert lazy["focal_file"] == "x" * 70000  # other large strings are still str
    for positions in (None, 7):
        assert np.array_equal(decode_quantized(lazy["compressed_logits"], positions).values,
                              decode_quantized(eager["compressed_logits"], positions).values)
    broken = json.loads(line)
    broken["compressed_logits"]["data_encoded"]["data"] = "zz" + compressed["data_encoded"]["data"][2:]
    with pytest.raises(CodecError, match="not valid hex"):
        decode_quantized(loads_record_line(json.dumps(broken).encode(), lazy_hex=True)["compressed_logits"])
