"""The oracle: a transcription of the published decompress_logits, kept here and nowhere in the package.

Transcribed from gdimitrovdev/LLMDistillation data_generation/compress.py (commit b1aaf9d); the thesis's
compress.py (Kristian2003/distillation, commit 7146b6f) is byte-for-byte the same file. The published
function prints and returns None on any exception; here every failure returns None too, and a result is
the NumPy array its torch.tensor would hold. The NumPy operations are the published ones, so shape rules,
broadcasting and float32 rounding are NumPy's own, not re-derived. check_against_oracle compares this
suite's two decoders with it.
"""

import copy
import warnings

import lz4.frame
import numpy as np
import pytest
import torch

from assertdistill.codec.codec import decode_quantized, decompress_logits
from assertdistill.codec.hexframes import CodecError


def _inflate(encoded):
    """entropy_decode: the bytes of data_encoded (encoding defaults to 'none')."""
    encoding = encoded.get("encoding", "none")
    if encoding == "lz4":
        return lz4.frame.decompress(bytes.fromhex(encoded.get("data")))
    if encoding == "none":
        return bytes.fromhex(encoded.get("data"))
    raise ValueError(f"Unknown encoding: {encoding}")


def _dequantize(codes, compressed):
    scale = compressed.get("scale", 1.0)
    zero_point = compressed.get("zero_point", 0.0)
    return (codes.astype(np.float32) - zero_point) * scale


def _unpack_4bit(packed, shape):
    total_values = np.prod(shape)
    unpacked = np.zeros(total_values, dtype=np.uint8)
    even = np.arange(0, total_values, 2)
    unpacked[even] = packed[: len(even)] & 0x0F
    odd = np.arange(1, total_values, 2)
    unpacked[odd] = (packed[: len(odd)] >> 4) & 0x0F
    return unpacked.reshape(shape)


def _decoded_array(compressed):
    """The NumPy array the published decoder hands to torch.tensor; any exception means None."""
    bits = compressed.get("bits")
    shape = compressed.get("shape")
    if isinstance(shape, list):
        shape = tuple(shape)
    data = _inflate(compressed.get("data_encoded"))
    if bits == 16:
        return np.frombuffer(data, dtype=np.float16).reshape(shape).astype(np.float32)
    if bits == 8:
        return _dequantize(np.frombuffer(data, dtype=np.uint8).reshape(shape), compressed)
    if bits == 4:
        if compressed.get("packed", False):
            codes = _unpack_4bit(np.frombuffer(data, dtype=np.uint8), shape)
        else:
            codes = np.frombuffer(data, dtype=np.uint8).reshape(shape)
        return _dequantize(codes, compressed)
    if bits == 32:
        return np.frombuffer(data, dtype=np.float32).reshape(shape)
    raise ValueError(f"Unsupported bit depth: {bits}")


def published_decompress(compressed):
    """The array the published decompress_logits returns for `compressed` (as NumPy), or None where it returns None."""
    if compressed is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy's overflow and torch's read-only-array warnings
        try:
            return torch.tensor(_decoded_array(compressed)).numpy()
        except Exception:  # the published decoder's own catch-all: any failure gives None
            return None


def thesis_teacher_rows(array):
    """What the thesis's loader keeps of a decoded array: (T, V) of its first row, or None (ndim not 2 or 3)."""
    if array is None or array.ndim not in (2, 3):
        return None
    return array if array.ndim == 2 else array[0]


# ---- comparing this suite's decoders with the oracle ---------------------------------------------------
def same_array(ours: np.ndarray, expected: np.ndarray) -> bool:
    """Same shape, dtype and bits (NaNs compared as NaNs: the payload is NumPy's either way)."""
    if ours.shape != expected.shape or ours.dtype != expected.dtype:
        return False
    nan = np.isnan(expected)
    return bool((np.isnan(ours) == nan).all()
                and (ours[~nan].view(np.uint32) == expected[~nan].view(np.uint32)).all())


def first_rows(expected: np.ndarray, max_positions: int) -> np.ndarray:
    """What training reads of a decoded array: the first batch row's leading positions, (T', V)."""
    rows = expected.reshape((-1,) + expected.shape[-2:])[0] if expected.ndim >= 2 else expected[None]
    return np.ascontiguousarray(rows[:max_positions])


def training_refusal_expected(expected: np.ndarray, compressed: dict, max_positions: int) -> bool:
    """Arrays the training path refuses although the published decoder returns them: nothing to train on
    (no shape, rank 0, no values), or a NaN / Inf among the positions it reads."""
    if compressed.get("shape") is None or expected.ndim == 0 or expected.size == 0:
        return True
    return not np.isfinite(first_rows(expected, max_positions)).all()


def check_against_oracle(compressed, max_positions):
    """The property: same array as the oracle, or both refuse; the training path agrees on its rows."""
    original = copy.deepcopy(compressed)
    expected = published_decompress(copy.deepcopy(compressed))
    if expected is None:
        with pytest.raises(CodecError):
            decompress_logits(compressed)
        with pytest.raises(CodecError):
            decode_quantized(compressed, max_positions=max_positions)
        assert compressed == original
        return "refused"
    assert same_array(decompress_logits(compressed).numpy(), expected)
    if expected.ndim >= 2:
        cut = decompress_logits(compressed, max_positions=max_positions).numpy()
        assert same_array(cut, np.ascontiguousarray(expected[..., :max_positions, :]))
    if training_refusal_expected(expected, compressed, max_positions):
        with pytest.raises(CodecError):
            decode_quantized(compressed, max_positions=max_positions)
        return "training refused"
    quantized = decode_quantized(compressed, max_positions=max_positions)
    assert same_array(quantized.dequantize().numpy(), first_rows(expected, max_positions))
    assert compressed == original  # decoding never mutates its input
    return "decoded"
