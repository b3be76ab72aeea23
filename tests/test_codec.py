"""Tests for assertdistill.codec.codec: round trips, compatibility with the generator's files, errors."""

import copy
import json
import os

import lz4.frame
import numpy as np
import pytest
import torch
from published_decoder import check_against_oracle, published_decompress

from assertdistill.codec import hexframes
from assertdistill.codec.codec import (
    QuantizedLogits,
    compress_logits,
    compress_topk,
    decode_quantized,
    decode_topk,
    decompress_logits,
    dequantize_codes,
)
from assertdistill.codec.hexframes import CodecError

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # test-only dependency
    st = None

BITS = (4, 8, 16, 32)
LEVELS = {4: 15, 8: 255}
SHAPES = ((6, 11), (1, 6, 11), (1, 5, 7), (3, 1))  # (1, 5, 7): 35 values, an odd count for 4-bit

# A 4-bit record as the original generator writes it (logits of shape [1, 3, 5], 15 values, padded).
GOLDEN_4BIT = {
    "format": "lz4",
    "compression": {"bits": 4, "original_size_bytes": 60, "bit_compressed_size_bytes": 8,
                    "final_size_bytes": 31, "compression_ratio": 60 / 31},
    "shape": [1, 3, 5],
    "data_encoded": {"encoding": "lz4",
                     "data": "04224d1868400800000000000000700800008030f749d1a466c20300000000",
                     "original_size": 8, "compressed_size": 31},
    "bits": 4,
    "scale": 0.5666666626930237,
    "zero_point": 2.6470587253570557,
    "packed": True,
    "values_per_byte": 2,
    "padded": True,
}
GOLDEN_4BIT_CODES = [0, 3, 7, 15, 9, 4, 1, 13, 4, 10, 6, 6, 2, 12, 3]


def teacher_like(shape, seed=0, dtype=np.float32):
    """Gaussian logits with a few large spikes per position, like a confident teacher."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, shape)
    rows = logits.reshape(-1, shape[-1])  # (T, V) view
    for row in rows:
        row[rng.integers(0, shape[-1], 2)] = rng.uniform(8.0, 15.0, 2)
    return logits.astype(dtype)


def encode_by_hand(logits, bits, encoding="lz4"):
    """Build a compressed_logits dict straight from docs/DATA_FORMAT.md, as the original generator did."""
    block = np.asarray(logits)
    extra = {}
    if bits in LEVELS:
        low, high = block.min(), block.max()  # float32 arithmetic, like the generator
        scale = (high - low) / LEVELS[bits] if high > low else 1
        zero_point = -low / scale
        codes = np.clip(np.round(block / scale + zero_point), 0, LEVELS[bits]).astype(np.uint8)
        extra = {"scale": float(scale), "zero_point": float(zero_point)}
        if bits == 4:
            flat = codes.ravel()
            padded = flat.size % 2 == 1
            flat = np.append(flat, np.uint8(0)) if padded else flat
            codes = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
            extra.update({"packed": True, "values_per_byte": 2, "padded": padded})
        raw = codes.tobytes()
    else:
        raw = block.astype(np.float16 if bits == 16 else np.float32).tobytes()
    payload = lz4.frame.compress(raw, compression_level=9) if encoding == "lz4" else raw
    return {
        "format": "lz4",
        "compression": {"bits": bits, "original_size_bytes": block.size * 4,
                        "bit_compressed_size_bytes": len(raw), "final_size_bytes": len(payload),
                        "compression_ratio": block.size * 4 / len(payload)},
        "shape": list(block.shape),
        "data_encoded": {"encoding": encoding, "data": payload.hex(),
                         "original_size": len(raw), "compressed_size": len(payload)},
        "bits": bits,
        **extra,
    }


def reference_decode(compressed):
    """Decode the whole block the plain way: full hex + LZ4 decode, then the docs/DATA_FORMAT.md formula."""
    encoded = compressed["data_encoded"]
    raw = bytes.fromhex(encoded["data"])
    raw = lz4.frame.decompress(raw) if encoded["encoding"] == "lz4" else raw
    shape, bits = compressed["shape"], compressed["bits"]
    count = int(np.prod(shape))
    if bits in (16, 32):
        return np.frombuffer(raw, np.float16 if bits == 16 else np.float32).astype(np.float32).reshape(shape)
    codes = np.frombuffer(raw, np.uint8)
    if bits == 4:
        codes = np.stack([codes & 0x0F, codes >> 4], axis=-1).ravel()[:count]
    return ((codes.astype(np.float32) - compressed["zero_point"]) * compressed["scale"]).reshape(shape)


def quantization_bound(compressed):
    """Worst-case error for 4/8 bits: half a step, plus slack for float32 rounding of (q - z) * s."""
    return compressed["scale"] / 2 + 1e-6


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bits", BITS)
def test_round_trip_error_bounds(bits, shape):
    logits = teacher_like(shape, seed=bits)
    compressed = compress_logits(logits, bits=bits)
    decoded = decompress_logits(compressed)
    assert decoded.dtype == torch.float32 and tuple(decoded.shape) == shape
    assert compressed["shape"] == list(shape) and compressed["bits"] == bits
    error = np.abs(decoded.numpy() - logits).max()
    if bits in LEVELS:
        assert error <= quantization_bound(compressed)
    elif bits == 16:
        np.testing.assert_array_equal(decoded.numpy(), logits.astype(np.float16).astype(np.float32))
    else:
        np.testing.assert_array_equal(decoded.numpy(), logits)


@pytest.mark.parametrize("bits", BITS)
def test_written_keys_follow_the_format(bits):
    logits = teacher_like((4, 9))  # 36 values
    compressed = compress_logits(torch.from_numpy(logits), bits=bits)
    keys = {"format", "compression", "shape", "data_encoded", "bits"}
    keys |= {"scale", "zero_point"} if bits in LEVELS else set()
    keys |= {"packed", "values_per_byte", "padded"} if bits == 4 else set()
    assert set(compressed) == keys
    encoded, stats = compressed["data_encoded"], compressed["compression"]
    assert set(encoded) == {"encoding", "data", "original_size", "compressed_size"}
    assert encoded["encoding"] == "lz4" and encoded["compressed_size"] * 2 == len(encoded["data"])
    frame = bytes.fromhex(encoded["data"])
    assert frame == lz4.frame.compress(lz4.frame.decompress(frame), compression_level=9)
    assert stats == {
        "bits": bits, "original_size_bytes": 36 * 4, "bit_compressed_size_bytes": encoded["original_size"],
        "final_size_bytes": encoded["compressed_size"],
        "compression_ratio": 36 * 4 / encoded["compressed_size"],
    }
    assert encoded["original_size"] == {4: 18, 8: 36, 16: 72, 32: 144}[bits]


@pytest.mark.parametrize("bits", BITS)
def test_constant_input_is_exact(bits):
    logits = np.full((1, 3, 5), -2.75, dtype=np.float32)
    compressed = compress_logits(logits, bits=bits)
    if bits in LEVELS:
        assert compressed["scale"] == 1.0
    np.testing.assert_array_equal(decompress_logits(compressed).numpy(), logits)


def test_odd_count_4bit_pads_the_last_high_nibble_with_zero():
    logits = teacher_like((1, 5, 7))  # 35 values -> 18 bytes
    compressed = compress_logits(logits, bits=4)
    raw = lz4.frame.decompress(bytes.fromhex(compressed["data_encoded"]["data"]))
    assert compressed["padded"] is True and len(raw) == 18 and raw[-1] >> 4 == 0
    assert compress_logits(teacher_like((2, 7)), bits=4)["padded"] is False


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_compress_accepts_any_float_tensor(dtype):
    logits = torch.from_numpy(teacher_like((1, 4, 6))).to(dtype)
    decoded = decompress_logits(compress_logits(logits, bits=32))
    torch.testing.assert_close(decoded, logits.float(), rtol=0, atol=0)


# ---------------------------------------------------------------- compatibility


def test_golden_generator_record_decodes():
    expected = (np.array(GOLDEN_4BIT_CODES, np.float32) - GOLDEN_4BIT["zero_point"]) * GOLDEN_4BIT["scale"]
    decoded = decompress_logits(GOLDEN_4BIT)
    assert decoded.shape == (1, 3, 5)
    np.testing.assert_array_equal(decoded.numpy().ravel(), expected.astype(np.float32))
    assert abs(decoded[0, 0, 3].item() - 7.0) < 1e-6 and abs(decoded[0, 0, 0].item() + 1.5) < 1e-6


@pytest.mark.parametrize("encoding", ["lz4", "none"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bits", BITS)
def test_hand_built_dict_decodes(bits, shape, encoding):
    logits = teacher_like(shape, seed=3)
    compressed = encode_by_hand(logits, bits, encoding)
    decoded = decompress_logits(compressed)
    np.testing.assert_array_equal(decoded.numpy(), reference_decode(compressed))
    if bits in LEVELS:
        assert np.abs(decoded.numpy() - logits).max() <= quantization_bound(compressed)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bits", BITS)
def test_compress_output_matches_reference_decoder(bits, shape):
    compressed = compress_logits(teacher_like(shape, seed=4), bits=bits)
    np.testing.assert_array_equal(decompress_logits(compressed).numpy(), reference_decode(compressed))


def published_cases():
    """Dicts written by the published generator's compress_logits, with what its decompress_logits returns."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "published_codec_cases.json")
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)["cases"]


PUBLISHED_CASES = published_cases()


def test_published_cases_cover_every_rank_and_bit_depth():
    assert {(len(case["shape"]), case["bits"]) for case in PUBLISHED_CASES} == \
        {(rank, bits) for rank in (1, 2, 3, 4) for bits in BITS}
    assert any(case["shape"][0] > 1 and len(case["shape"]) == 3 for case in PUBLISHED_CASES)  # batch > 1


@pytest.mark.parametrize("case", PUBLISHED_CASES, ids=lambda case: f"{case['bits']}bit-{case['shape']}")
def test_every_published_shape_decodes_to_the_published_decoders_array(case):
    """(Regenerate the cases with tests/make_published_codec_cases.py and the published compress.py.)"""
    expected = np.asarray(case["decoded"], np.float32).reshape(case["shape"])
    decoded = decompress_logits(copy.deepcopy(case["compressed"]))
    assert decoded.dtype == torch.float32 and tuple(decoded.shape) == tuple(case["shape"])
    np.testing.assert_array_equal(decoded.numpy(), expected)
    # Training reads the first batch row, only up to the target's length.
    first_row = expected.reshape((-1,) + expected.shape[-2:])[0] if expected.ndim > 1 else expected[None]
    quantized = decode_quantized(case["compressed"], max_positions=2)
    assert quantized.rows == int(np.prod(case["shape"][:-2]))
    np.testing.assert_array_equal(quantized.dequantize().numpy(), first_row[:2])
    # Cutting positions keeps the leading positions of every row.
    cut = decompress_logits(case["compressed"], max_positions=2)
    np.testing.assert_array_equal(cut.numpy(), expected[..., :2, :] if expected.ndim > 1 else expected)


@pytest.mark.parametrize("case", PUBLISHED_CASES[::3], ids=lambda case: f"{case['bits']}bit-{case['shape']}")
def test_this_codec_round_trips_every_published_shape(case):
    logits = np.asarray(case["decoded"], np.float32).reshape(case["shape"])
    compressed = compress_logits(logits, bits=case["bits"])
    assert compressed["shape"] == case["shape"]
    np.testing.assert_array_equal(decompress_logits(compressed).numpy(), reference_decode(compressed))


# ---------------------------------------------------------------- max_positions and the fast path


@pytest.mark.parametrize("encoding", ["lz4", "none"])
@pytest.mark.parametrize("shape", [(1, 6, 7), (6, 7)])  # V = 7: 4-bit prefixes end mid-byte
@pytest.mark.parametrize("bits", BITS)
def test_max_positions_returns_the_leading_positions(bits, shape, encoding):
    compressed = encode_by_hand(teacher_like(shape, seed=5), bits, encoding)
    full = decompress_logits(compressed)
    for positions in (1, 2, 3, 6, 7, 100):
        part = decompress_logits(compressed, max_positions=positions)
        kept = min(positions, shape[-2])
        assert tuple(part.shape) == shape[:-2] + (kept, shape[-1])
        assert torch.equal(part, full[..., :kept, :])
        quantized = decode_quantized(compressed, max_positions=positions)
        assert quantized.num_positions == shape[-2] and quantized.values.shape == (kept, shape[-1])


@pytest.mark.parametrize("bits", BITS)
def test_decompress_is_dequantize_of_decode_quantized(bits):
    compressed = compress_logits(teacher_like((1, 5, 9), seed=6), bits=bits)
    quantized = decode_quantized(compressed, max_positions=3)
    assert isinstance(quantized, QuantizedLogits) and quantized.bits == bits
    assert quantized.values.dtype == {4: np.uint8, 8: np.uint8, 16: np.float16, 32: np.float32}[bits]
    if bits == 4:
        assert quantized.values.max() <= 15
    if bits > 8:
        assert (quantized.scale, quantized.zero_point) == (1.0, 0.0)
    assert torch.equal(decompress_logits(compressed, max_positions=3)[0], quantized.dequantize())


def test_dequantize_codes_broadcasts_per_record_parameters():
    records = [compress_logits(teacher_like((1, 4, 6), seed=seed), bits=8) for seed in range(3)]
    codes = torch.from_numpy(np.stack([decode_quantized(r).values for r in records]))  # (B, T, V)
    scale = torch.tensor([r["scale"] for r in records], dtype=torch.float64).view(-1, 1, 1)  # (B, 1, 1)
    zero_point = torch.tensor([r["zero_point"] for r in records]).view(-1, 1, 1)  # (B, 1, 1)
    batch = dequantize_codes(codes, scale, zero_point)
    assert batch.dtype == torch.float32 and batch.shape == (3, 4, 6)
    for index, record in enumerate(records):
        assert torch.equal(batch[index], decompress_logits(record)[0])
        single = dequantize_codes(codes[index], record["scale"], record["zero_point"])  # Python floats
        assert torch.equal(single, batch[index])
    assert dequantize_codes(codes[0], scale, zero_point).shape == (3, 4, 6)  # broadcasts, not in place


# ---------------------------------------------------------------- errors


def valid(bits=8, encoding="lz4", shape=(1, 4, 5)):
    """A fresh valid dict to break."""
    return encode_by_hand(teacher_like(shape, seed=7), bits, encoding)


def with_data(compressed, payload, encoding=None):
    """Replace the payload, keeping compressed_size consistent so the intended check fires."""
    encoded = compressed["data_encoded"]
    encoded["data"] = payload if isinstance(payload, str) else payload.hex()
    encoded["compressed_size"] = len(encoded["data"]) // 2
    encoded["encoding"] = encoding or encoded["encoding"]
    return compressed


def edit_payload(edit):
    """Replace the payload of a valid dict by edit(hex string) (a str or bytes)."""
    def mutate():
        compressed = valid()
        return with_data(compressed, edit(compressed["data_encoded"]["data"]))
    return mutate


def set_key(key, value, bits=8):
    def mutate():
        compressed = valid(bits)
        compressed[key] = value
        return compressed
    return mutate


def set_encoded(key, value, encoding="lz4"):
    def mutate():
        compressed = valid(encoding=encoding)
        compressed["data_encoded"][key] = value
        return compressed
    return mutate


def drop(key, bits=8, inner=False):
    def mutate():
        compressed = valid(bits)
        del (compressed["data_encoded"] if inner else compressed)[key]
        return compressed
    return mutate


def reshaped(shape, bits=8, encoding="lz4"):
    """Declare another shape (with a matching original_size) over the same data."""
    def mutate():
        compressed = valid(bits, encoding)
        compressed["shape"] = shape
        count = int(np.prod(shape))
        compressed["data_encoded"]["original_size"] = (count + 1) // 2 if bits == 4 else count * bits // 8
        return compressed
    return mutate


def unsized(make):
    """Rewrite the frame without the optional content size, as other LZ4 writers may."""
    def mutate():
        compressed = make()
        raw = lz4.frame.decompress(bytes.fromhex(compressed["data_encoded"]["data"]))
        return with_data(compressed, lz4.frame.compress(raw, compression_level=9, store_size=False))
    return mutate


def frame_of(raw):
    return lz4.frame.compress(raw, compression_level=9)


def raw_floats(values, bits):
    return np.asarray(values, np.float16 if bits == 16 else np.float32).tobytes()


def float_data(values, bits):
    def mutate():
        compressed = valid(bits, shape=(1, 1, len(values)))
        return with_data(compressed, frame_of(raw_floats(values, bits)))
    return mutate


# Dicts the published decoder refuses too (tests/test_published_decoder.py checks each against it); the ones
# it reads though they lack or contradict a hint are there as well, decoded.
ERROR_CASES = {
    "not a dict": (lambda: "lz4", "expected a dict"),
    "list": (lambda: [valid()], "expected a dict"),
    "missing bits": (drop("bits"), "unknown bits None"),
    "missing data_encoded": (drop("data_encoded"), "data_encoded must be a dict, got NoneType"),
    "missing packed": (drop("packed", bits=4), r"the data holds 10 values but shape \[1, 4, 5\] needs 20"),
    "missing encoding": (drop("encoding", inner=True), "the data holds 43 values"),  # the frame read as plain
    "missing data": (drop("data", inner=True), "data_encoded.data must be a hex string, got NoneType"),
    "unknown encoding": (set_encoded("encoding", "gzip"), "unknown encoding 'gzip'"),
    "unknown bits": (set_key("bits", 12), "unknown bits 12"),
    "bits as string": (set_key("bits", "8"), "unknown bits '8'"),
    "bits as bool": (set_key("bits", True), "unknown bits True"),
    "data_encoded not a dict": (set_key("data_encoded", "00ff"), "data_encoded must be a dict"),
    "data as bytes": (set_encoded("data", b"00"), "hex string"),
    "odd-length hex": (edit_payload(lambda data: data[:-1]), "not valid hex"),
    "non-hex characters": (edit_payload(lambda data: "zz" + data[2:]), "not valid hex"),
    "non-ascii hex": (edit_payload(lambda data: "éé" + data[2:]), "not valid hex"),
    "whitespace inside a hex byte": (edit_payload(lambda data: " 4" + data[2:]), "not valid hex"),
    "truncated frame": (edit_payload(lambda data: bytes.fromhex(data)[:-6]), "Frame incomplete"),
    "corrupt frame header": (edit_payload(lambda data: b"\x05" + bytes.fromhex(data)[1:]), "corrupt LZ4 frame"),
    "random bytes as frame": (edit_payload(lambda data: bytes(range(40))), "corrupt LZ4 frame"),
    "shape not a list": (set_key("shape", "1x4x5"), "shape must be an int or a list of ints"),
    "shape with zero": (set_key("shape", [1, 0, 5]), r"the data holds 20 values but shape \[1, 0, 5\] needs 0"),
    "shape with float": (set_key("shape", [1, 4.0, 5]), "shape must be an int or a list of ints"),
    "shape with bool": (set_key("shape", [True, 4, 5]), "shape must be an int or a list of ints"),
    "two inferred axes": (set_key("shape", [-1, 4, -1]), "more than one inferred axis"),
    "empty shape": (set_key("shape", []), r"the data holds 20 values but shape \[\] needs 1"),
    "rows shorter than shape": (reshaped([2, 4, 5]), r"the data holds 20 values but shape \[2, 4, 5\] needs 40"),
    "frame shorter than shape": (reshaped([1, 5, 5]), r"the data holds 20 values but shape \[1, 5, 5\] needs 25"),
    "frame longer than shape": (reshaped([1, 3, 5]), r"the data holds 20 values but shape \[1, 3, 5\] needs 15"),
    "unsized frame shorter than shape": (unsized(reshaped([1, 5, 5])), r"holds 20 values but shape \[1, 5, 5\]"),
    "unsized frame longer than shape": (unsized(reshaped([1, 3, 5])), r"holds 20 values but shape \[1, 3, 5\]"),
    "plain data shorter than shape": (reshaped([4, 6], encoding="none"), r"holds 20 values but shape \[4, 6\]"),
    "4-bit frame shorter than shape": (reshaped([1, 6, 5], bits=4), r"4-bit data holds 10 bytes but 30 packed"),
    "4-bit packed without a shape": (drop("shape", bits=4), "packed 4-bit data needs a shape"),
    "impossible LZ4 ratio": (edit_payload(lambda data: lz4.frame.compress(bytes(1 << 20))[:30]), "cannot hold"),
    "huge int scale": (set_key("scale", 10**400), "beyond the float range"),
    "string scale": (set_key("scale", "0.1"), "scale must be a number"),
    "null zero_point": (set_key("zero_point", None), "zero_point must be a number"),
}

# Arrays the published decoder returns but the thesis's loader could not train on: refused for training only.
TRAINING_ERROR_CASES = {
    "missing shape": (drop("shape"), "no shape"),
    "NaN in float32 data": (float_data([1.0, float("nan"), 2.0], 32), "32-bit data contains NaN or Inf"),
    "Inf in float16 data": (float_data([1.0, float("inf")], 16), "16-bit data contains NaN or Inf"),
    "NaN scale": (set_key("scale", float("nan")), "dequantize codes to NaN or Inf"),
    "Inf zero_point": (set_key("zero_point", float("inf")), "dequantize codes to NaN or Inf"),
    "dequantized overflow": (set_key("scale", 1e37), "dequantize codes to NaN or Inf"),
}


@pytest.mark.parametrize("max_positions", [None, 2])
@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_malformed_dicts_raise_codec_error(case, max_positions):
    make, message = ERROR_CASES[case]
    compressed = make()
    assert published_decompress(copy.deepcopy(compressed)) is None  # the published decoder refuses it too
    with pytest.raises(CodecError, match=message) as caught:
        decompress_logits(compressed, max_positions=max_positions)
    text = str(caught.value)
    assert text.startswith("compressed_logits: ") and "\n" not in text
    with pytest.raises(CodecError):
        decode_quantized(compressed, max_positions=max_positions)


@pytest.mark.parametrize("max_positions", [None, 3])
@pytest.mark.parametrize("case", sorted(TRAINING_ERROR_CASES))
def test_arrays_training_cannot_use_are_refused_there_only(case, max_positions):
    make, message = TRAINING_ERROR_CASES[case]
    compressed = make()
    expected = published_decompress(copy.deepcopy(compressed))
    np.testing.assert_array_equal(decompress_logits(compressed).numpy(), expected)  # NaN == NaN here
    with pytest.raises(CodecError, match=message):
        decode_quantized(compressed, max_positions=max_positions)


@pytest.mark.parametrize("options", [{}, {"block_checksum": True, "content_checksum": True},
                                     {"block_size": lz4.frame.BLOCKSIZE_MAX4MB}, {"store_size": False}])
def test_whole_block_decodes_frames_of_every_layout(options):
    logits = teacher_like((1, 300, 700), seed=3)
    compressed = compress_logits(logits, bits=8)
    codes = lz4.frame.decompress(bytes.fromhex(compressed["data_encoded"]["data"]))
    frame = lz4.frame.compress(codes, **options)
    with_data(compressed, frame)
    assert hexframes.lz4_frame_length(frame) == len(frame) and hexframes.lz4_frame_length(frame + b"\0") == len(frame)
    # The one-call path serves every frame that records its size; others go through the streaming reader.
    assert (hexframes.read_whole_lz4(frame.hex(), len(codes)) is not None) == options.get("store_size", True)
    assert decode_quantized(compressed).values.tobytes() == codes
    assert torch.equal(decompress_logits(compressed), decompress_logits(compress_logits(logits, bits=8)))


@pytest.mark.parametrize("max_positions", [0, -1, 2.0, True])
def test_bad_max_positions_is_a_value_error(max_positions):
    with pytest.raises(ValueError, match="max_positions"):
        decompress_logits(valid(), max_positions=max_positions)


@pytest.mark.parametrize(
    ("logits", "bits", "message"),
    [
        (np.zeros((2, 3), np.float32), 7, "bits must be"),
        (np.zeros((2, 3), np.float32), True, "bits must be"),
        (np.array([[0.0, np.nan]], np.float32), 8, "NaN or Inf"),
        (np.array([[0.0, np.inf]], np.float32), 32, "NaN or Inf"),
        (np.zeros((), np.float32), 8, "at least one axis"),
        (np.zeros((0, 5), np.float32), 8, "no empty axis"),
        (np.zeros((2, 3), np.int64), 8, "float"),
        (torch.zeros(2, 3, dtype=torch.int32), 8, "float"),
        ([[0.0, 1.0]], 8, "float"),
        (np.array([[0.0, 1e5]], np.float32), 16, "float16 range"),
        (np.array([[-1e300, 1e300]]), 8, "too wide"),
    ],
)
def test_compress_rejects_bad_input(logits, bits, message):
    with pytest.raises(ValueError, match=message):
        compress_logits(logits, bits=bits)


# ---------------------------------------------------------------- top-k sparse format


def softmax_mass(logits, axis=-1):
    """sum(exp(x)) along axis, in float64."""
    return np.exp(np.asarray(logits, np.float64)).sum(axis=axis)


def topk_plain(compressed):
    """The same top-k dict with every array stored without LZ4 (encoding 'none')."""
    compressed = copy.deepcopy(compressed)
    for encoded in compressed["data_encoded"].values():
        raw = lz4.frame.decompress(bytes.fromhex(encoded["data"]))
        encoded.update({"encoding": "none", "data": raw.hex(), "compressed_size": len(raw)})
    return compressed


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("shape", [(6, 11), (1, 6, 11), (3, 1)])
def test_topk_round_trip_keeps_top_entries_and_tail_mass(shape, k):
    logits = teacher_like(shape, seed=k)
    block = logits.reshape(-1, shape[-1]).astype(np.float64)  # (T, V)
    compressed = compress_topk(logits, k)
    kept = min(k, shape[-1])
    assert compressed["format"] == "topk" and compressed["k"] == kept and compressed["shape"] == list(shape)
    assert compressed["index_dtype"] == "uint16"
    sparse = decode_topk(compressed)
    order = np.argsort(-block, axis=1, kind="stable")[:, :kept]
    np.testing.assert_array_equal(np.sort(sparse.indices, axis=1), np.sort(order, axis=1))
    np.testing.assert_array_equal(sparse.values, np.take_along_axis(block, order, 1).astype(np.float16))
    assert (np.diff(sparse.values.astype(np.float32), axis=1) <= 0).all()  # descending
    dense = decompress_logits(compressed)
    assert dense.dtype == torch.float32 and tuple(dense.shape) == shape
    dense = dense.numpy().reshape(block.shape)
    np.testing.assert_allclose(np.take_along_axis(dense, order, 1), np.take_along_axis(block, order, 1),
                               rtol=1e-3, atol=0)
    if kept < shape[-1]:
        outside = np.ones(block.shape, bool)
        np.put_along_axis(outside, order, False, axis=1)
        true_tail = softmax_mass(np.where(outside, block, -np.inf))  # (T,)
        stored_tail = (shape[-1] - kept) * softmax_mass(sparse.tail[:, None])  # float32 tail, exact
        np.testing.assert_allclose(stored_tail, true_tail, rtol=1e-6)
        # The dense decode is float16: its tail is rounded by at most |tail| * 2**-11 (in logits).
        dense_tail = softmax_mass(np.where(outside, dense, -np.inf))
        bound = np.expm1(np.abs(sparse.tail).astype(np.float64) * 2**-11) + 1e-6  # (T,)
        assert (np.abs(dense_tail / true_tail - 1) <= bound).all()


@pytest.mark.parametrize("plain", [False, True])
def test_topk_max_positions_is_a_prefix_of_the_full_decode(plain):
    compressed = compress_topk(teacher_like((1, 7, 13), seed=8), 4)
    compressed = topk_plain(compressed) if plain else compressed
    full = decompress_logits(compressed)
    for positions in (1, 3, 7, 50):
        kept = min(positions, 7)
        part = decompress_logits(compressed, max_positions=positions)
        assert tuple(part.shape) == (1, kept, 13) and torch.equal(part, full[:, :kept])
        quantized = decode_quantized(compressed, max_positions=positions)
        assert quantized.num_positions == 7 and quantized.values.shape == (kept, 13)


def test_topk_decodes_as_dense_16bit_values_for_the_data_pipeline():
    compressed = compress_topk(teacher_like((5, 9), seed=9), 3)
    quantized = decode_quantized(compressed)
    assert (quantized.bits, quantized.scale, quantized.zero_point) == (16, 1.0, 0.0)
    assert quantized.values.dtype == np.float16 and quantized.values.shape == (5, 9)
    assert torch.equal(quantized.dequantize(), decompress_logits(compressed))


def test_topk_tail_beyond_float16_decodes_as_float32():
    logits = np.full((2, 6), -1e6, np.float32)
    logits[:, 0] = 3.0
    quantized = decode_quantized(compress_topk(logits, 1))
    assert quantized.bits == 32 and quantized.values.dtype == np.float32
    np.testing.assert_array_equal(quantized.values, logits)


def test_topk_wide_vocabulary_uses_int32_indices():
    logits = teacher_like((2, 70_000), seed=10)
    compressed = compress_topk(logits, 5)
    assert compressed["index_dtype"] == "int32"
    sparse = decode_topk(compressed)
    np.testing.assert_array_equal(np.sort(sparse.indices, 1), np.sort(np.argsort(-logits, 1)[:, :5], 1))


def test_topk_k_at_least_vocab_keeps_everything():
    logits = teacher_like((3, 4), seed=11)
    compressed = compress_topk(logits, 10)
    assert compressed["k"] == 4
    np.testing.assert_array_equal(decompress_logits(compressed).numpy(), logits.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize(("logits", "k", "message"), [
    (np.zeros((2, 3), np.float32), 0, "k must be"),
    (np.zeros((2, 3), np.float32), 2.0, "k must be"),
    (np.zeros((2, 3), np.float32), True, "k must be"),
    (np.array([[0.0, np.nan]], np.float32), 1, "NaN or Inf"),
    (np.zeros((2, 3, 4), np.float32), 1, "shape"),
    (np.array([[0.0, 1e5]], np.float32), 1, "float16 range"),
])
def test_compress_topk_rejects_bad_input(logits, k, message):
    with pytest.raises(ValueError, match=message):
        compress_topk(logits, k)


def valid_topk(plain=False):
    """A fresh valid top-k dict (shape [1, 4, 5], k = 2) to break."""
    compressed = compress_topk(teacher_like((1, 4, 5), seed=12), 2)
    return topk_plain(compressed) if plain else compressed


def topk_edit(edit, plain=False):
    def mutate():
        compressed = valid_topk(plain)
        edit(compressed)
        return compressed
    return mutate


def set_array(name, raw):
    """Replace one array with plain bytes of the right size (so the content checks fire)."""
    def edit(compressed):
        compressed["data_encoded"][name].update({"data": raw.hex(), "compressed_size": len(raw)})
    return topk_edit(edit, plain=True)


TOPK_ERROR_CASES = {
    "missing k": (topk_edit(lambda c: c.pop("k")), "missing key 'k'"),
    "k zero": (topk_edit(lambda c: c.update(k=0)), r"k must be an int in \[1, V=5\]"),
    "k above V": (topk_edit(lambda c: c.update(k=6)), "k must be an int"),
    "k float": (topk_edit(lambda c: c.update(k=2.0)), "k must be an int"),
    "missing index_dtype": (topk_edit(lambda c: c.pop("index_dtype")), "missing key 'index_dtype'"),
    "unknown index_dtype": (topk_edit(lambda c: c.update(index_dtype="int8")), "unknown index_dtype 'int8'"),
    "uint16 for a huge V": (topk_edit(lambda c: c.update(shape=[1, 4, 70_000])), "cannot index V=70000"),
    "dense too large": (topk_edit(lambda c: c.update(shape=[1, 4, 2**31 - 1], index_dtype="int32")),
                        "too large"),
    "missing shape": (topk_edit(lambda c: c.pop("shape")), "missing key 'shape'"),
    "bad shape": (topk_edit(lambda c: c.update(shape=[2, 4, 5])), r"shape must be \[T, V\]"),
    "data_encoded not a dict": (topk_edit(lambda c: c.update(data_encoded="00")), "data_encoded must be a dict"),
    "missing tail": (topk_edit(lambda c: c["data_encoded"].pop("tail")), "missing key 'data_encoded.tail'"),
    "array not a dict": (topk_edit(lambda c: c["data_encoded"].update(values=[])),
                         "data_encoded.values must be a dict"),
    "missing inner data": (topk_edit(lambda c: c["data_encoded"]["indices"].pop("data")),
                           "missing key 'data_encoded.indices.data'"),
    "values original_size": (topk_edit(lambda c: c["data_encoded"]["values"].update(original_size=7)),
                             r"data_encoded.values.original_size is 7 but float16 values \[4, 2\] needs 16"),
    "values compressed_size": (topk_edit(lambda c: c["data_encoded"]["values"].update(compressed_size=1)),
                               "data_encoded.values.compressed_size is 1"),
    "odd hex": (topk_edit(lambda c: c["data_encoded"]["tail"].update(data="abc")), "even length"),
    "bad hex": (topk_edit(lambda c: c["data_encoded"]["tail"].update(data="zz" * 16, compressed_size=16),
                          plain=True), "not valid hex"),
    "truncated plain tail": (set_array("tail", b"\0" * 12), r"topk tail holds 12 bytes but .* needs 16"),
    "corrupt values frame": (topk_edit(lambda c: c["data_encoded"]["values"].update(
        data="00" * 20, compressed_size=20)), "corrupt LZ4 frame"),
    "index out of range": (set_array("indices", np.array([[0, 5], [1, 2], [3, 4], [0, 1]], np.uint16).tobytes()),
                           r"indices must lie in \[0, 5\)"),
    "repeated index": (set_array("indices", np.array([[0, 0], [1, 2], [3, 4], [0, 1]], np.uint16).tobytes()),
                       "repeat within a position"),
    "NaN value": (set_array("values", np.array([np.nan] + [0] * 7, np.float16).tobytes()), "values contain NaN"),
    "Inf tail": (set_array("tail", np.array([0, np.inf, 0, 0], np.float32).tobytes()), "tail contains NaN"),
}


@pytest.mark.parametrize("max_positions", [None, 2])
@pytest.mark.parametrize("case", sorted(TOPK_ERROR_CASES))
def test_malformed_topk_dicts_raise_codec_error(case, max_positions):
    make, message = TOPK_ERROR_CASES[case]
    compressed = make()
    with pytest.raises(CodecError, match=message) as caught:
        decompress_logits(compressed, max_positions=max_positions)
    assert str(caught.value).startswith("compressed_logits: ") and "\n" not in str(caught.value)
    with pytest.raises(CodecError):
        decode_quantized(compressed, max_positions=max_positions)


def test_decode_topk_rejects_other_formats():
    with pytest.raises(CodecError, match="format 'topk'"):
        decode_topk(valid())



# ---------------------------------------------------------------- property: decode never misbehaves


def expected_shape(compressed, max_positions):
    shape = compressed["shape"]
    if len(shape) == 1:  # [V]: one position, nothing to cut
        return tuple(shape)
    kept = shape[-2] if max_positions is None else min(max_positions, shape[-2])
    return tuple(shape[:-2]) + (kept, shape[-1])


def check_decode(compressed, max_positions):
    """A dense dict decodes as the published decoder does (or both refuse); a top-k dict gives finite float32
    logits of the declared shape or raises CodecError."""
    if not (isinstance(compressed, dict) and compressed.get("format") == "topk"):
        check_against_oracle(compressed, max_positions or 4)
        return
    try:
        logits = decompress_logits(compressed, max_positions=max_positions)
    except CodecError:
        return
    assert logits.dtype == torch.float32
    assert tuple(logits.shape) == expected_shape(compressed, max_positions)
    assert bool(torch.isfinite(logits).all())


if st is not None:
    TOP_KEYS = ["format", "shape", "bits", "scale", "zero_point", "packed", "values_per_byte", "padded",
                "data_encoded", "compression"]
    INNER_KEYS = ["encoding", "data", "original_size", "compressed_size"]
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6),
        st.sampled_from(["lz4", "none", 4, 8, 16, 32, 1, 0, -1, "00", "04224d18"]),
    )
    json_values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=6,
    )
    small_shapes = st.lists(st.integers(-1, 9), min_size=0, max_size=4)

    @st.composite
    def mutated_dicts(draw):
        """A valid record of random bits/shape/encoding, then up to three random mutations."""
        bits = draw(st.sampled_from(BITS))
        shape = draw(st.sampled_from([(1, 3, 5), (4, 3), (1, 1, 1), (2, 9)]))
        logits = teacher_like(shape, seed=draw(st.integers(0, 3)))
        compressed = (compress_logits(logits, bits) if draw(st.booleans())
                      else encode_by_hand(logits, bits, draw(st.sampled_from(["lz4", "none"]))))
        encoded = compressed["data_encoded"]
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["set", "del", "set_inner", "del_inner", "random_data",
                                         "truncate", "flip", "shape", "garble"]))
            payload = current_payload(encoded)
            if kind == "set":
                compressed[draw(st.sampled_from(TOP_KEYS))] = draw(json_values)
            elif kind == "del":
                compressed.pop(draw(st.sampled_from(TOP_KEYS)), None)
            elif kind == "set_inner":
                encoded[draw(st.sampled_from(INNER_KEYS))] = draw(json_values)
            elif kind == "del_inner":
                encoded.pop(draw(st.sampled_from(INNER_KEYS)), None)
            elif kind == "random_data":
                payload = draw(st.sampled_from([b"", b'\x04"M\x18'])) + draw(st.binary(max_size=80))
            elif kind == "truncate" and payload:
                payload = payload[: draw(st.integers(0, len(payload) - 1))]
            elif kind == "flip" and payload:
                index = draw(st.integers(0, len(payload) - 1))
                flipped = bytes([payload[index] ^ draw(st.integers(1, 255))])
                payload = payload[:index] + flipped + payload[index + 1:]
            elif kind == "shape":
                compressed["shape"] = draw(small_shapes)
            elif kind == "garble" and isinstance(encoded.get("data"), str) and encoded["data"]:
                data = encoded["data"]
                index = draw(st.integers(0, len(data) - 1))
                replacement = draw(st.sampled_from(["g", " ", "é", "", "0"]))
                encoded["data"] = data[:index] + replacement + data[index + 1:]
                continue
            if kind in ("random_data", "truncate", "flip") and draw(st.booleans()):
                encoded["data"] = payload.hex()  # keep sizes consistent so deeper checks are reached
                encoded["compressed_size"] = len(payload)
            if kind == "shape" and draw(st.booleans()):
                count = int(np.prod(compressed["shape"])) if compressed["shape"] else 0
                encoded["original_size"] = (count + 1) // 2 if bits == 4 else count * bits // 8
        return compressed

    def current_payload(encoded):
        try:
            return bytes.fromhex(encoded["data"])
        except (KeyError, TypeError, ValueError):  # already mutated away
            return b""

    TOPK_KEYS = ["format", "shape", "k", "index_dtype", "data_encoded", "compression"]
    TOPK_ARRAYS = ["values", "indices", "tail"]

    @st.composite
    def mutated_topk_dicts(draw):
        """A valid top-k record (LZ4 or plain arrays), then up to three random mutations."""
        shape = draw(st.sampled_from([(1, 3, 5), (4, 3), (1, 1, 1), (2, 9)]))
        compressed = compress_topk(teacher_like(shape, seed=draw(st.integers(0, 3))), draw(st.integers(1, 6)))
        compressed = topk_plain(compressed) if draw(st.booleans()) else compressed
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["set", "del", "set_array", "del_array", "set_inner", "random_data",
                                         "truncate", "flip", "shape"]))
            arrays = compressed.get("data_encoded")
            encoded = arrays.get(draw(st.sampled_from(TOPK_ARRAYS))) if isinstance(arrays, dict) else None
            encoded = encoded if isinstance(encoded, dict) else {}
            payload = current_payload(encoded)
            if kind == "set":
                compressed[draw(st.sampled_from(TOPK_KEYS))] = draw(json_values)
            elif kind == "del":
                compressed.pop(draw(st.sampled_from(TOPK_KEYS)), None)
            elif kind == "set_array" and isinstance(arrays, dict):
                arrays[draw(st.sampled_from(TOPK_ARRAYS))] = draw(json_values)
            elif kind == "del_array" and isinstance(arrays, dict):
                arrays.pop(draw(st.sampled_from(TOPK_ARRAYS)), None)
            elif kind == "set_inner":
                encoded[draw(st.sampled_from(INNER_KEYS))] = draw(json_values)
            elif kind == "random_data":
                payload = draw(st.binary(max_size=80))
            elif kind == "truncate" and payload:
                payload = payload[: draw(st.integers(0, len(payload) - 1))]
            elif kind == "flip" and payload:
                index = draw(st.integers(0, len(payload) - 1))
                payload = payload[:index] + bytes([payload[index] ^ draw(st.integers(1, 255))]) + payload[index + 1:]
            elif kind == "shape":
                compressed["shape"] = draw(small_shapes)
            if kind in ("random_data", "truncate", "flip") and encoded and draw(st.booleans()):
                encoded["data"] = payload.hex()  # keep sizes consistent so deeper checks are reached
                encoded["compressed_size"] = len(payload)
        return compressed

    random_dicts = st.dictionaries(st.sampled_from(TOP_KEYS), json_values, max_size=8)
    random_topk_dicts = st.fixed_dictionaries({"format": st.just("topk")},
                                              optional={key: json_values for key in TOPK_KEYS[1:]})

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(compressed=st.one_of(mutated_dicts(), mutated_topk_dicts(), random_dicts, random_topk_dicts,
                                json_values),
           max_positions=st.one_of(st.none(), st.integers(1, 12)))
    def test_decode_returns_declared_shape_or_codec_error(compressed, max_positions):
        original = copy.deepcopy(compressed)
        check_decode(compressed, max_positions)
        assert compressed == original  # decoding never mutates its input

else:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_decode_returns_declared_shape_or_codec_error():
        """Placeholder so the missing property test shows up as skipped."""


@pytest.mark.parametrize("key, value", [("scale", [False]), ("scale", [0.5]), ("zero_point", [[1]])])
def test_a_list_scale_or_zero_point_is_refused_though_the_published_decoder_broadcasts_it(key, value):
    """The one kind of record the published decoder reads and this one refuses (docs/DATA_FORMAT.md)."""
    compressed = {**compress_logits(np.arange(15, dtype=np.float32).reshape(1, 3, 5), bits=8), key: value}
    published = published_decompress(copy.deepcopy(compressed))
    assert published is not None and published.shape == (1, 3, 5)
    with pytest.raises(CodecError, match=rf"{key} must be a number, got \["):
        decompress_logits(compressed)
    with pytest.raises(CodecError, match=rf"{key} must be a number"):
        decode_quantized(compressed)
