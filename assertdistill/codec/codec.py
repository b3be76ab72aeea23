"""Encode and decode the `compressed_logits` records of the distillation data (docs/DATA_FORMAT.md).

A record holds one teacher logit array, quantized to 4/8 bits (one global scale/zero_point:
x ~= (q - z) * s) or stored as float16/float32, then wrapped in an LZ4 frame and hex-encoded. The
generator writes [1, T, V] (or [T, V]); its codec takes any shape, so any rank decodes: the last
axis is the vocabulary V, the one before it the positions T ([V] alone is one position), and the
axes before those are batch rows. Decoding can stop after the first `max_positions` positions, which
is what training needs: targets are 20-80 tokens long but every block is padded to T = 512.

The dense form is read by the published decoder's rules (dense.py): it needs only bits, shape,
data_encoded{encoding (default "none"), data}, and scale/zero_point (defaults 1.0/0.0) and packed
(default false) where they apply; format, the sizes, values_per_byte, padded and the "compression"
stats are hints, checked when present and named in QuantizedLogits.notes when they disagree. The
hex/LZ4 container of each array is read by hexframes.py.

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

from .dense import decode_full, fast_prefix, read_layout
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
    notes: tuple[str, ...] = ()  # hint keys that disagree with the data (dense.py), e.g. "original_size"
    shape: tuple[int, ...] = ()  # the stored array's shape as decoded (a negative axis inferred), before the cut

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

    Refuses (CodecError) what training cannot use: no shape, rank 0, an empty axis, non-finite values.
    With all_rows, values are every batch row's (R * T', V) (rows is R; decompress_logits' shape restores them).
    """
    return _decode(compressed, max_positions, all_rows)[0]


def decompress_logits(compressed: dict, max_positions: int | None = None) -> torch.Tensor:
    """Decode a compressed_logits dict to float32 logits of the stored shape, positions (axis -2) cut to max_positions.

    (1, T', V) or (T', V) for what the generator writes; (..., T', V) for any other rank, (V,) for rank 1.
    The same array as the published decoder's, NaN, Inf, empty and rank-0 arrays included.
    """
    quantized, shape = _decode(compressed, max_positions, all_rows=True, finite=False)
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


def _decode(compressed, max_positions, all_rows: bool, finite: bool = True) -> tuple[QuantizedLogits, tuple[int, ...]]:
    """The decoded values and the shape decompress_logits returns them in.

    values: (R * T', V), every batch row, with all_rows; else (T', V) of the first row only, which is a
    prefix of the data (rows are consecutive blocks of T * V values), so nothing after it is read when the
    data records its size. The dense form is read by the published decoder's rules (dense.py); with finite,
    an array the thesis's loader could not train on is refused: no shape (flat), rank 0, an empty axis, or
    a value that is not finite once dequantized.
    """
    _check_max_positions(max_positions)
    if isinstance(compressed, dict) and compressed.get("format") == "topk":
        sparse, shape = _decode_topk(compressed, max_positions)
        dense = sparse.dense()  # (T', V)
        quantized = QuantizedLogits(dense, 1.0, 0.0, 8 * dense.itemsize, sparse.num_positions,
                                    shape=tuple(int(d) for d in shape))
        return quantized, _output_shape(shape, dense.shape[0])
    layout = read_layout(compressed)
    values, dims = None, _plain_dims(layout.shape)
    if dims is not None:
        rows, num_positions, vocab_size = _rows_positions_vocab(dims)
        positions = num_positions if max_positions is None else min(max_positions, num_positions)
        if (rows == 1 or not all_rows) and positions * vocab_size < math.prod(dims):  # a prefix of the data
            values = fast_prefix(compressed, layout, dims, positions * vocab_size)  # (T' * V,) or None
    if values is None:
        full, layout = decode_full(compressed)  # in the stored shape
        if finite:
            _check_usable(compressed.get("shape"), full.shape)
        dims = list(full.shape)
        rows, num_positions, vocab_size = _rows_positions_vocab(dims or [1])
        positions = num_positions if max_positions is None else min(max_positions, num_positions)
        blocks = full.reshape(rows, num_positions, vocab_size)  # (R, T, V)
        values = blocks[:, :positions] if all_rows else blocks[0, :positions]
    read_rows = rows if all_rows else 1
    values = values.reshape(read_rows * positions, vocab_size)  # (R * T', V) or (T', V)
    if finite:
        _check_finite(values, layout)
    quantized = QuantizedLogits(values, layout.scale, layout.zero_point, layout.bits, num_positions, rows,
                                tuple(layout.notes), tuple(dims))
    return quantized, _output_shape(dims, positions)


def _plain_dims(shape) -> list[int] | None:
    """The axes of a shape that is a list of positive ints (the fast path's), else None."""
    if isinstance(shape, (list, tuple)) and shape and all(_is_int(d) and d > 0 for d in shape):
        return [int(d) for d in shape]
    return None


def _rows_positions_vocab(dims: list[int]) -> tuple[int, int, int]:
    """(R, T, V) of a shape: axes before T are batch rows (R is their product); [V] is one position."""
    if len(dims) == 1:
        return 1, 1, dims[0]
    return math.prod(dims[:-2]), dims[-2], dims[-1]


def _check_usable(shape, decoded_shape: tuple[int, ...]) -> None:
    """Refuse what the thesis's loader could not train on: a flat array without shape, rank 0, no values."""
    if shape is None:
        _fail("no shape: the published decoder returns a flat array, which the thesis's loader sets aside")
    if not decoded_shape:
        _fail(f"shape {_show(shape)} is a single value (rank 0), not logits")
    if 0 in decoded_shape:
        _fail(f"shape {list(decoded_shape)} has an empty axis: no logits to train on")


def _check_finite(values: np.ndarray, layout) -> None:
    """Refuse values that are NaN or infinite once dequantized (the thesis's loss turns them into NaN)."""
    if layout.bits in _LEVELS:
        with np.errstate(over="ignore", invalid="ignore"):
            table = (np.arange(256, dtype=np.float32) - np.float32(layout.zero_point)) * np.float32(layout.scale)
        bad = ~np.isfinite(table)  # (256,) which codes dequantize to a non-finite value
        if bad.any() and bad[values].any():
            _fail(f"scale {layout.scale!r} and zero_point {layout.zero_point!r} dequantize codes to NaN or Inf")
    elif not np.isfinite(values).all():
        _fail(f"{layout.bits}-bit data contains NaN or Inf")


def _output_shape(shape, positions: int) -> tuple[int, ...]:
    """The stored shape with its positions axis (-2) cut to `positions`; [V] stays [V]."""
    if len(shape) <= 1:  # [V] stays [V], rank 0 stays rank 0
        return tuple(int(d) for d in shape)
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


def _check_shape(shape) -> tuple[int, int]:
    """(T, V) of a top-k shape, which is [T, V] or [1, T, V]."""
    if not isinstance(shape, (list, tuple)) or not all(_is_int(d) and d > 0 for d in shape):
        _fail(f"shape must be a list of positive ints, got {_show(shape)}")
    if len(shape) == 3 and shape[0] == 1:
        return int(shape[1]), int(shape[2])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    _fail(f"a top-k shape must be [T, V] or [1, T, V], got {_show(list(shape))}")


