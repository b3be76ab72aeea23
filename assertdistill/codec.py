"""Encode and decode the `compressed_logits` records of the distillation data (docs/DATA_FORMAT.md).

A record holds one teacher logit array, quantized to 4/8 bits (one global scale/zero_point:
x ~= (q - z) * s) or stored as float16/float32, then wrapped in an LZ4 frame and hex-encoded. The
generator writes [1, T, V] (or [T, V]); its codec takes any shape, so any rank decodes: the last
axis is the vocabulary V, the one before it the positions T ([V] alone is one position), and the
axes before those are batch rows. Decoding can stop after the first `max_positions` positions, which
is what training needs: targets are 20-80 tokens long but every block is padded to T = 512.

Keys a decoder needs: format, shape, bits, data_encoded{encoding, data, original_size,
compressed_size}; scale and zero_point for 4/8 bits; packed (true) for 4 bits. values_per_byte and
padded are checked when present; the "compression" stats dict is informational and not read. The
hex/LZ4 container of each array is checked and read by hexframes.py.

A second, sparse format (docs/TOPK_FORMAT.md) keeps per position only the k largest logits:
    {"format": "topk", "shape": [1, T, V] or [T, V], "k": k, "index_dtype": "uint16" | "int32",
     "data_encoded": {"values":  {encoding, data, original_size, compressed_size},  # (T, k) float16
                      "indices": {...},   # (T, k) vocabulary ids, index_dtype (uint16 when V <= 65535)
                      "tail":    {...}},  # (T,) float32: the logit every other entry is filled with
     "compression": {...stats, informational}}
Each array is row-major, LZ4-framed and hex-encoded like the published data, so the first n positions
are a prefix of each. Per position, values are sorted descending and indices are distinct; the tail is
log(sum of exp(x_j) over the V - k entries j outside the top k) - log(V - k), so filling those entries
with it keeps the softmax mass outside the top k exact at temperature 1. decode_quantized returns the
dense (T', V) reconstruction as float16 (bits 16; float32, bits 32, when a tail overflows float16).
"""

import math
from dataclasses import dataclass

import lz4.frame
import numpy as np
import torch

from .hexframes import check_array as _check_array
from .hexframes import fail as _fail
from .hexframes import get_key as _get
from .hexframes import is_int as _is_int
from .hexframes import read_lz4 as _read_lz4
from .hexframes import read_plain as _read_plain
from .hexframes import show as _show

_LEVELS = {4: 15, 8: 255}  # highest code per quantized bit depth
_VALUE_DTYPES = {4: np.uint8, 8: np.uint8, 16: np.float16, 32: np.float32}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ROWS_PER_CHUNK = 64  # positions quantized at a time in compress_logits (bounds float64 temps)
_TOPK_INDEX_DTYPES = {"uint16": np.uint16, "int32": np.int32}
_TOPK_ARRAYS = {"values": np.float16, "indices": None, "tail": np.float32}  # None: index_dtype
_MAX_DENSE_VALUES = 1 << 31  # a top-k dict may declare any V; cap its dense (T', V) decode


@dataclass
class QuantizedLogits:
    """Decoded but not dequantized logits: codes or raw floats plus the parameters to map them."""

    values: np.ndarray  # (T', V): uint8 codes for 4/8 bits, float16 for 16, float32 for 32
    scale: float  # 1.0 for 16/32
    zero_point: float  # 0.0 for 16/32
    bits: int
    num_positions: int  # T of the stored block, before the max_positions cut
    rows: int = 1  # batch rows of the stored array (product of the axes before T); values hold the first

    def dequantize(self) -> torch.Tensor:
        """Return float32 logits (T', V); for 32 bits the tensor shares memory with `values`."""
        values = torch.from_numpy(self.values if self.values.flags.writeable else self.values.copy())  # (T', V)
        if self.bits in _LEVELS:
            return dequantize_codes(values, self.scale, self.zero_point)
        return values.float()


def dequantize_codes(codes: torch.Tensor, scale, zero_point) -> torch.Tensor:
    """Map codes (..., V) to float32 (codes - zero_point) * scale, in float32 on codes' device."""
    scale, zero_point = (
        p.to(device=codes.device, dtype=torch.float32) if torch.is_tensor(p) else float(np.float32(p))
        for p in (scale, zero_point)
    )
    shapes = [p.shape for p in (scale, zero_point) if torch.is_tensor(p)]
    values = codes.to(torch.float32)  # (..., V), a fresh tensor for uint8 codes
    fresh = values.data_ptr() != codes.data_ptr()
    if not fresh or torch.broadcast_shapes(values.shape, *shapes) != values.shape:
        return (values - zero_point) * scale
    return values.sub_(zero_point).mul_(scale)  # in place: same float32 rounding, less memory


def compress_logits(logits, bits: int = 8) -> dict:
    """Encode float logits of any shape, usually (T, V) or (1, T, V), as a compressed_logits dict at 4/8/16/32 bits."""
    if not _is_int(bits) or bits not in _VALUE_DTYPES:
        raise ValueError(f"bits must be 4, 8, 16 or 32, got {bits!r}")
    array, block = _checked_logits(logits, any_rank=True)  # block: (R * T, V), the array's rows stacked

    quant_params = {}
    if bits in _LEVELS:
        codes, scale, zero_point = _quantize(block, _LEVELS[bits])  # (T, V) uint8
        quant_params = {"scale": scale, "zero_point": zero_point}
        if bits == 4:
            flat = codes.reshape(-1)
            padded = flat.size % 2 == 1
            if padded:
                flat = np.append(flat, np.uint8(0))
            codes = flat[0::2] | (flat[1::2] << 4)  # element 2i low nibble, 2i+1 high nibble
            quant_params.update({"packed": True, "values_per_byte": 2, "padded": padded})
        raw = codes.tobytes()
    else:
        with np.errstate(over="ignore"):
            stored = block.astype(_VALUE_DTYPES[bits])  # (T, V)
        if not np.isfinite(stored).all():
            raise ValueError(f"logits exceed the float{bits} range")
        raw = stored.tobytes()

    frame = lz4.frame.compress(raw, compression_level=9)
    original_size = array.size * 4  # as float32, the generator's reference size
    result = {
        "format": "lz4",
        "compression": {
            "bits": int(bits),
            "original_size_bytes": int(original_size),
            "bit_compressed_size_bytes": len(raw),
            "final_size_bytes": len(frame),
            "compression_ratio": float(original_size / len(frame)),
        },
        "shape": [int(d) for d in array.shape],
        "data_encoded": {
            "encoding": "lz4",
            "data": frame.hex(),
            "original_size": len(raw),
            "compressed_size": len(frame),
        },
        "bits": int(bits),
    }
    result.update(quant_params)
    return result


def decode_quantized(compressed: dict, max_positions: int | None = None, all_rows: bool = False) -> QuantizedLogits:
    """Decode a compressed_logits dict to codes/raw floats (T', V) of its first batch row, reading only T' positions.

    With all_rows, values are every batch row's (R * T', V) (rows is R; decompress_logits' shape restores them).
    """
    return _decode(compressed, max_positions, all_rows)[0]


def decompress_logits(compressed: dict, max_positions: int | None = None) -> torch.Tensor:
    """Decode a compressed_logits dict to float32 logits of the stored shape, positions (axis -2) cut to max_positions.

    (1, T', V) or (T', V) for what the generator writes; (..., T', V) for any other rank, (V,) for rank 1.
    """
    quantized, shape = _decode(compressed, max_positions, all_rows=True)
    logits = quantized.dequantize()  # (R * T', V)
    return logits.reshape(shape)


@dataclass
class TopkLogits:
    """A decoded top-k block: the k largest logits per position, their vocabulary ids, one tail logit."""

    values: np.ndarray  # (T', k) float16, descending per position
    indices: np.ndarray  # (T', k) uint16 or int32, distinct per position, < V
    tail: np.ndarray  # (T',) float32: the logit of each of the V - k other entries
    vocab_size: int
    num_positions: int  # T of the stored block, before the max_positions cut

    def dense(self) -> np.ndarray:
        """Dense (T', V) logits: top-k values at their indices, tail elsewhere; float16 unless it overflows."""
        with np.errstate(over="ignore"):
            fits = bool(np.isfinite(self.tail.astype(np.float16)).all())
        dense = np.empty((self.tail.shape[0], self.vocab_size), dtype=np.float16 if fits else np.float32)
        dense[:] = self.tail[:, None]
        np.put_along_axis(dense, self.indices.astype(np.intp), self.values, axis=1)
        return dense


def compress_topk(logits, k: int) -> dict:
    """Encode float logits (T, V) or (1, T, V) as a sparse top-k dict (k clipped to V; docs/TOPK_FORMAT.md)."""
    if not _is_int(k) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    array, block = _checked_logits(logits)  # block: (T, V)
    num_positions, vocab_size = block.shape
    k = int(min(k, vocab_size))
    index_dtype = "uint16" if vocab_size <= 65535 else "int32"
    values = np.empty((num_positions, k), dtype=np.float16)  # (T, k)
    indices = np.empty((num_positions, k), dtype=_TOPK_INDEX_DTYPES[index_dtype])  # (T, k)
    tail = np.empty(num_positions, dtype=np.float32)  # (T,)
    for start in range(0, num_positions, _ROWS_PER_CHUNK):
        rows = block[start : start + _ROWS_PER_CHUNK].astype(np.float64)  # (R, V), a fresh copy
        top = np.argpartition(rows, vocab_size - k, axis=1)[:, vocab_size - k :]  # (R, k), unordered
        top_values = np.take_along_axis(rows, top, axis=1)
        order = np.argsort(-top_values, axis=1, kind="stable")
        top, top_values = np.take_along_axis(top, order, 1), np.take_along_axis(top_values, order, 1)
        with np.errstate(over="ignore"):
            values[start : start + len(rows)] = top_values
        indices[start : start + len(rows)] = top
        if k < vocab_size:
            np.put_along_axis(rows, top, -np.inf, axis=1)  # rows now hold only the tail entries
            peak = rows.max(axis=1, keepdims=True)  # (R, 1), finite: at least one tail entry
            mass = np.exp(rows - peak).sum(axis=1)  # (R,)
            tail_rows = peak[:, 0] + np.log(mass) - math.log(vocab_size - k)
        else:
            tail_rows = top_values[:, -1]  # no entry lies outside the top k: the tail is never used
        with np.errstate(over="ignore"):
            tail[start : start + len(rows)] = tail_rows
    if not (np.isfinite(values).all() and np.isfinite(tail).all()):
        raise ValueError("logits exceed the float16 range")

    arrays = {"values": values.tobytes(), "indices": indices.tobytes(), "tail": tail.tobytes()}
    frames = {name: lz4.frame.compress(raw, compression_level=9) for name, raw in arrays.items()}
    original_size = array.size * 4  # as float32, the generator's reference size
    final_size = sum(len(frame) for frame in frames.values())
    return {
        "format": "topk",
        "compression": {
            "format": "topk", "k": k,
            "original_size_bytes": int(original_size),
            "bit_compressed_size_bytes": sum(len(raw) for raw in arrays.values()),
            "final_size_bytes": final_size,
            "compression_ratio": float(original_size / final_size),
        },
        "shape": [int(d) for d in array.shape],
        "k": k,
        "index_dtype": index_dtype,
        "data_encoded": {
            name: {"encoding": "lz4", "data": frames[name].hex(), "original_size": len(arrays[name]),
                   "compressed_size": len(frames[name])}
            for name in _TOPK_ARRAYS
        },
    }


def decode_topk(compressed: dict, max_positions: int | None = None) -> TopkLogits:
    """Decode a top-k compressed_logits dict to its sparse arrays, reading only T' positions."""
    if not isinstance(compressed, dict) or compressed.get("format") != "topk":
        _fail("expected a dict with format 'topk'")
    return _decode_topk(compressed, max_positions)[0]


def hex_size(compressed: dict) -> int:
    """Characters of hex data in a (decodable) compressed_logits dict."""
    encoded = compressed["data_encoded"]
    is_topk = compressed.get("format") == "topk"
    arrays = [encoded[name] for name in ("values", "indices", "tail")] if is_topk else [encoded]
    return sum(len(array["data"]) for array in arrays)


def _checked_logits(logits, any_rank: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The logits as an array, and its rows stacked as (R * T, V); ValueError for bad input.

    Without any_rank the array must be (T, V) or (1, T, V) (the top-k format's shapes).
    """
    array = _float_array(logits)
    if any_rank:
        fits, allowed = array.ndim >= 1, "at least one axis"
    else:
        fits, allowed = array.ndim in (2, 3) and (array.ndim == 2 or array.shape[0] == 1), "shape (T, V) or (1, T, V)"
    if not fits or 0 in array.shape:
        raise ValueError(f"logits must have {allowed} and no empty axis, got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError("logits contain NaN or Inf")
    return array, array.reshape(-1, array.shape[-1])


def _float_array(logits) -> np.ndarray:
    if torch.is_tensor(logits):
        if not torch.is_floating_point(logits):
            raise ValueError(f"logits must be a float tensor, got {logits.dtype}")
        logits = logits.detach().cpu()
        return (logits.float() if logits.dtype == torch.bfloat16 else logits).numpy()
    if isinstance(logits, np.ndarray) and np.issubdtype(logits.dtype, np.floating):
        return logits
    raise ValueError(f"logits must be a float torch.Tensor or np.ndarray, got {type(logits).__name__}")


def _quantize(block: np.ndarray, levels: int) -> tuple[np.ndarray, float, float]:
    low, high = float(block.min()), float(block.max())
    # Parameters are rounded to float32 first, since decoders compute (q - z) * s in float32.
    with np.errstate(over="ignore"):
        scale = float(np.float32((high - low) / levels))
        scale = scale if scale > 0.0 else 1.0  # max == min (or a span below float32 resolution)
        zero_point = float(np.float32(-low / scale))
    if not (math.isfinite(scale) and math.isfinite(zero_point)):
        raise ValueError("logits span a range too wide for float32 quantization parameters")
    codes = np.empty(block.shape, dtype=np.uint8)  # (T, V)
    for start in range(0, block.shape[0], _ROWS_PER_CHUNK):
        rows = block[start : start + _ROWS_PER_CHUNK].astype(np.float64)
        codes[start : start + _ROWS_PER_CHUNK] = np.clip(np.rint(rows / scale + zero_point), 0, levels)
    return codes, scale, zero_point


def _decode(compressed, max_positions, all_rows: bool) -> tuple[QuantizedLogits, tuple[int, ...]]:
    """The decoded values and the shape decompress_logits returns them in.

    values: (R * T', V), every batch row, with all_rows; else (T', V) of the first row only, which is a
    prefix of the data (rows are consecutive blocks of T * V values), so nothing after it is read.
    """
    _check_max_positions(max_positions)
    if not isinstance(compressed, dict):
        _fail(f"expected a dict, got {type(compressed).__name__}")
    format_name = _get(compressed, "format")
    if isinstance(format_name, str) and format_name == "topk":
        sparse, shape = _decode_topk(compressed, max_positions)
        dense = sparse.dense()  # (T', V)
        quantized = QuantizedLogits(dense, 1.0, 0.0, 8 * dense.itemsize, sparse.num_positions)
        return quantized, _output_shape(shape, dense.shape[0])
    if not isinstance(format_name, str) or format_name != "lz4":
        _fail(f"unknown format {_show(format_name)} (expected 'lz4' or 'topk')")
    bits = _get(compressed, "bits")
    if not _is_int(bits) or bits not in _VALUE_DTYPES:
        _fail(f"unknown bits {_show(bits)} (expected 4, 8, 16 or 32)")
    shape = _get(compressed, "shape")
    rows, num_positions, vocab_size = _check_any_shape(shape)
    total = rows * num_positions * vocab_size
    scale, zero_point = _check_params(compressed, bits, total)

    expected_size = _byte_count(bits, total)  # bytes of the whole array
    encoding, hex_data = _check_encoded(_get(compressed, "data_encoded"), bits, shape, expected_size)

    positions = num_positions if max_positions is None else min(max_positions, num_positions)
    read_rows = rows if all_rows else 1
    # Several rows cut to T' positions are not a prefix of the data: read them whole, then cut.
    count = total if read_rows > 1 else positions * vocab_size
    full = count == total
    need = _byte_count(bits, count)
    if encoding == "none":
        buffer = _read_plain(hex_data, need)
    else:
        what = f"shape {list(shape)}" + ("" if full else f" (first {positions} positions)")
        buffer = _read_lz4(hex_data, need, full, f"{bits}-bit data", what)

    values = np.frombuffer(buffer, dtype=_VALUE_DTYPES[bits])
    if bits == 4:
        codes = np.empty(2 * values.size, dtype=np.uint8)
        np.bitwise_and(values, 0x0F, out=codes[0::2])
        np.right_shift(values, 4, out=codes[1::2])
        values = codes[:count]
    if read_rows > 1:
        values = values.reshape(rows, num_positions, vocab_size)[:, :positions]  # (R, T', V)
    values = values.reshape(-1, vocab_size)  # (R * T', V) or (T', V)
    if bits not in _LEVELS and not np.isfinite(values).all():
        _fail(f"{bits}-bit data contains NaN or Inf")
    quantized = QuantizedLogits(values, scale, zero_point, int(bits), num_positions, rows)
    return quantized, _output_shape(shape, positions)


def _output_shape(shape, positions: int) -> tuple[int, ...]:
    """The stored shape with its positions axis (-2) cut to `positions`; [V] stays [V]."""
    if len(shape) == 1:
        return (int(shape[0]),)
    return tuple(int(d) for d in shape[:-2]) + (positions, int(shape[-1]))


def _check_max_positions(max_positions) -> None:
    if max_positions is not None and (not _is_int(max_positions) or max_positions < 1):
        raise ValueError(f"max_positions must be a positive int or None, got {max_positions!r}")


def _decode_topk(compressed: dict, max_positions) -> tuple[TopkLogits, list]:
    _check_max_positions(max_positions)
    shape = _get(compressed, "shape")
    num_positions, vocab_size = _check_shape(shape)
    k = _get(compressed, "k")
    if not _is_int(k) or not 1 <= k <= vocab_size:
        _fail(f"k must be an int in [1, V={vocab_size}], got {_show(k)}")
    index_dtype = _get(compressed, "index_dtype")
    limit = {"uint16": 65536, "int32": 2**31 - 1}
    if not isinstance(index_dtype, str) or index_dtype not in limit:
        _fail(f"unknown index_dtype {_show(index_dtype)} (expected 'uint16' or 'int32')")
    if vocab_size > limit[index_dtype]:
        _fail(f"index_dtype {index_dtype} cannot index V={vocab_size}")
    encoded = _get(compressed, "data_encoded")
    if not isinstance(encoded, dict):
        _fail(f"data_encoded must be a dict, got {type(encoded).__name__}")

    positions = num_positions if max_positions is None else min(max_positions, num_positions)
    if positions * vocab_size > _MAX_DENSE_VALUES:
        _fail(f"a dense decode of {positions} x {vocab_size} values is too large")
    full = positions == num_positions
    arrays = {}
    for name, dtype in _TOPK_ARRAYS.items():
        dtype = np.dtype(dtype or _TOPK_INDEX_DTYPES[index_dtype])
        row_count = 1 if name == "tail" else int(k)  # items per position
        array_shape = [num_positions] + ([] if name == "tail" else [int(k)])
        array_name = f"{dtype.name} {name} {array_shape}"
        where = f"data_encoded.{name}"
        encoding, hex_data = _check_array(_get(encoded, name, "data_encoded."), where, f"topk {name}",
                                          array_name, array_name, num_positions * row_count * dtype.itemsize)
        need = positions * row_count * dtype.itemsize
        if encoding == "none":
            buffer = _read_plain(hex_data, need)
        else:
            what = array_name + ("" if full else f" (first {positions} positions)")
            buffer = _read_lz4(hex_data, need, full, f"topk {name}", what)
        arrays[name] = np.frombuffer(buffer, dtype=dtype).reshape([positions] + array_shape[1:])

    values, indices, tail = arrays["values"], arrays["indices"], arrays["tail"]
    if not np.isfinite(values).all():
        _fail("topk values contain NaN or Inf")
    if not np.isfinite(tail).all():
        _fail("topk tail contains NaN or Inf")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= vocab_size):
        _fail(f"topk indices must lie in [0, {vocab_size}), got {int(indices.min())}..{int(indices.max())}")
    if k > 1 and (np.diff(np.sort(indices, axis=1), axis=1) == 0).any():
        _fail("topk indices repeat within a position")
    return TopkLogits(values, indices, tail, vocab_size, num_positions), shape


def _check_any_shape(shape) -> tuple[int, int, int]:
    """(R, T, V) of a published shape: axes before T are batch rows (R is their product); [V] is one position."""
    if not isinstance(shape, (list, tuple)) or not shape or not all(_is_int(d) and d > 0 for d in shape):
        _fail(f"shape must be a list of positive ints, got {_show(shape)}")
    dims = [int(d) for d in shape]
    if len(dims) == 1:
        return 1, 1, dims[0]
    return math.prod(dims[:-2]), dims[-2], dims[-1]


def _check_shape(shape) -> tuple[int, int]:
    """(T, V) of a top-k shape, which is [T, V] or [1, T, V]."""
    if not isinstance(shape, (list, tuple)) or not all(_is_int(d) and d > 0 for d in shape):
        _fail(f"shape must be a list of positive ints, got {_show(shape)}")
    if len(shape) == 3 and shape[0] == 1:
        return int(shape[1]), int(shape[2])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    _fail(f"a top-k shape must be [T, V] or [1, T, V], got {_show(list(shape))}")


def _check_encoded(encoded, bits: int, shape, expected_size: int) -> tuple[str, str]:
    original_size = encoded.get("original_size") if isinstance(encoded, dict) else None
    # The generator wrote float16 teacher logits unchanged under bits=32; name that case.
    halved = bits == 32 and original_size == expected_size // 2
    hint = " (float16 values under bits=32?)" if halved else ""
    return _check_array(encoded, "data_encoded", f"{bits}-bit data", f"{bits}-bit shape {list(shape)}",
                        f"shape {list(shape)}", expected_size, hint)


def _check_params(compressed: dict, bits: int, count: int) -> tuple[float, float]:
    if bits not in _LEVELS:
        return 1.0, 0.0
    params = []
    for key in ("scale", "zero_point"):
        value = _get(compressed, key)
        is_number = isinstance(value, (int, float, np.integer, np.floating))
        if not is_number or isinstance(value, (bool, np.bool_)):
            _fail(f"{key} must be a number, got {_show(value)}")
        number = float(value) if abs(value) <= _FLOAT32_MAX else math.inf  # also guards huge ints
        if not abs(number) <= _FLOAT32_MAX:
            _fail(f"{key} is {_show(value)}, not a finite float32")
        params.append(number)
    scale, zero_point = params
    if not float(np.float32(scale)) > 0.0:
        _fail(f"scale must be > 0, got {scale!r}")
    largest = max(abs(zero_point), abs(_LEVELS[bits] - zero_point)) * scale  # max |(q - z) * s|
    if largest > _FLOAT32_MAX / 2:  # half: a margin for float32 rounding of s and z
        _fail(f"scale {scale!r} and zero_point {zero_point!r} overflow float32 when dequantized")
    if bits == 4:
        packed = _get(compressed, "packed")
        if not isinstance(packed, (bool, np.bool_)) or not packed:
            _fail(f"4-bit data must have packed=true, got {_show(compressed['packed'])}")
        values_per_byte = compressed.get("values_per_byte", 2)
        if not _is_int(values_per_byte) or values_per_byte != 2:
            _fail(f"4-bit data must have values_per_byte=2, got {_show(values_per_byte)}")
        padded = compressed.get("padded", count % 2 == 1)
        if not isinstance(padded, (bool, np.bool_)) or bool(padded) != (count % 2 == 1):
            need_pad = "need a" if count % 2 else "need no"
            _fail(f"padded is {_show(padded)} but {count} values {need_pad} pad nibble")
    return scale, zero_point


def _byte_count(bits: int, count: int) -> int:
    return (count + 1) // 2 if bits == 4 else count * np.dtype(_VALUE_DTYPES[bits]).itemsize


