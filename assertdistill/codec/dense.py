"""Decode the published (dense) compressed_logits form by the rules of the published decoder.

The published decompress_logits (gdimitrovdev/LLMDistillation data_generation/compress.py; the thesis's
compress.py is the same file) reads only `bits`, `shape`, `data_encoded.encoding` (default "none"),
`data_encoded.data`, and `scale` / `zero_point` (defaults 1.0 / 0.0, 4 and 8 bits) and `packed` (default
false, 4 bits). decode_full gives the same array for every object that decoder turns into an array and
raises CodecError for every object it fails on. Every other key is a hint: `format`, the data sizes,
`values_per_byte`, `padded` and the `compression` stats are checked when present and a mismatch is named in
`notes`, never a refusal. The rules, as the published decoder applies them with NumPy:
- data is a hex str (whitespace between bytes allowed); "lz4" data is inflated as one frame, bytes after it
  ignored; shape is what ndarray.reshape takes (missing: flat; one negative entry: inferred);
- 4 bits packed: value 2i is the low nibble of byte i, 2i+1 its high nibble; more bytes than needed are
  ignored (one byte fills every pair); 4 bits unpacked: one code per byte, any value 0-255;
- codes dequantize as (float32(q) - zero_point) * scale in float32; 16 bits widen to float32.
fast_prefix reads only the first positions of the first batch row when the data records its own size and
its LZ4 blocks run to the frame's end mark (the generator's frames do): a prefix of the same bytes. Damage
inside a later block of such a frame goes unseen (the published decoder would fail on it); anything else
goes through decode_full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import lz4.frame
import numpy as np

from .hexframes import (
    MAX_LZ4_RATIO,
    CodecError,
    HexBytes,
    fail,
    frame_content_size,
    frame_is_whole,
    is_int,
    read_lz4,
    read_plain,
    show,
    unhex,
)

BITS = (4, 8, 16, 32)
QUANTIZED_BITS = (4, 8)
VALUE_DTYPES = {4: np.uint8, 8: np.uint8, 16: np.float16, 32: np.float32}
MAX_VALUES = 1 << 31  # values of one array; a real block holds 16.4 M (512 x 32100)
MAX_DIM = 2**31 - 1  # larger axes are refused before anything is allocated


@dataclass
class DenseLayout:
    """What a dense compressed_logits dict says, read by the published decoder's rules."""

    bits: int
    shape: object  # as stored: None, an int, or a list/tuple of ints
    encoding: str  # "lz4" or "none"
    hex_data: str | HexBytes
    scale: float  # float32-rounded, 1.0 for 16/32 bits
    zero_point: float  # float32-rounded, 0.0 for 16/32 bits
    packed: bool  # 4 bits: two codes per byte
    notes: list[str] = field(default_factory=list)  # hint mismatches, by key

    @property
    def itemsize(self) -> int:
        """Stored bytes per value when not packed (packed 4 bits: see byte_count)."""
        return np.dtype(VALUE_DTYPES[self.bits]).itemsize

    def byte_count(self, values: int) -> int:
        """Stored bytes of `values` values."""
        return (values + 1) // 2 if self.packed else values * self.itemsize


def read_layout(compressed: dict) -> DenseLayout:
    """The keys the published decoder reads, with its defaults; CodecError where it fails on them."""
    if not isinstance(compressed, dict):
        fail(f"expected a dict, got {type(compressed).__name__}")
    bits = compressed.get("bits")
    is_number = isinstance(bits, (int, float, np.integer, np.floating)) and not isinstance(bits, (bool, np.bool_))
    if not is_number or bits not in BITS:
        fail(f"unknown bits {show(bits)} (expected 4, 8, 16 or 32)")
    bits = int(bits)
    encoded = compressed.get("data_encoded")
    if not isinstance(encoded, dict):
        fail(f"data_encoded must be a dict, got {type(encoded).__name__}")
    encoding = encoded.get("encoding", "none")
    if not isinstance(encoding, str) or encoding not in ("lz4", "none"):
        fail(f"unknown encoding {show(encoding)} (expected 'lz4' or 'none')")
    hex_data = encoded.get("data")
    if not isinstance(hex_data, (str, HexBytes)):
        fail(f"data_encoded.data must be a hex string, got {type(hex_data).__name__}")
    scale, zero_point = 1.0, 0.0
    if bits in QUANTIZED_BITS:
        scale = _parameter(compressed, "scale", 1.0)
        zero_point = _parameter(compressed, "zero_point", 0.0)
    packed = bits == 4 and bool(compressed.get("packed", False))
    layout = DenseLayout(bits, compressed.get("shape"), encoding, hex_data, scale, zero_point, packed)
    _check_key_hints(compressed, layout)
    return layout


def _parameter(compressed: dict, key: str, default: float) -> float:
    """scale or zero_point as the float32 NumPy computes with; any JSON number (inf when beyond float32)."""
    value = compressed.get(key, default)
    if not isinstance(value, (int, float, np.integer, np.floating)):  # bools are ints, as in NumPy
        fail(f"{key} must be a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float64: NumPy cannot convert it either
        fail(f"{key} is {show(value)}, beyond the float range")
    with np.errstate(over="ignore"):
        return float(np.float32(number))


def _check_key_hints(compressed: dict, layout: DenseLayout) -> None:
    """Note the hints that need no data: format, values_per_byte."""
    if "format" in compressed and compressed["format"] != "lz4":
        layout.notes.append("format")
    if layout.bits == 4 and "values_per_byte" in compressed:
        if compressed["values_per_byte"] != (2 if layout.packed else 1):
            layout.notes.append("values_per_byte")


def check_size_hints(compressed: dict, layout: DenseLayout, raw_size: int, stored_size: int, values: int) -> None:
    """Note the size hints (data_encoded sizes, padded, compression stats) that disagree with the data."""
    encoded = compressed["data_encoded"]
    expected = {"original_size": raw_size, "compressed_size": stored_size}
    for key, actual in expected.items():
        if key in encoded and not (is_int(encoded[key]) and encoded[key] == actual):
            layout.notes.append(key)
    if layout.packed and "padded" in compressed:
        if not isinstance(compressed["padded"], (bool, np.bool_)) or bool(compressed["padded"]) != (values % 2 == 1):
            layout.notes.append("padded")
    stats = compressed.get("compression")
    if "compression" in compressed:
        known = {"bits": layout.bits, "bit_compressed_size_bytes": raw_size, "final_size_bytes": stored_size,
                 "original_size_bytes": 4 * values}
        if not isinstance(stats, dict) or any(
                key in stats and not (is_int(stats[key]) and stats[key] == value) for key, value in known.items()):
            layout.notes.append("compression")


def _dims(shape) -> tuple[list[int], int | None] | None:
    """(axes, index of the inferred axis or None) of a shape ndarray.reshape takes; None when shape is None."""
    if shape is None:
        return None
    items = [shape] if is_int(shape) else shape
    if not isinstance(items, (list, tuple)) or not all(is_int(d) for d in items):
        fail(f"shape must be an int or a list of ints, got {show(shape)}")
    dims = [int(d) for d in items]
    unknown = [index for index, d in enumerate(dims) if d < 0]  # NumPy infers any negative axis
    if len(unknown) > 1:
        fail(f"shape {show(shape)} has more than one inferred axis")
    if any(d > MAX_DIM for d in dims):
        fail(f"shape {show(shape)} has an axis beyond {MAX_DIM}")
    return dims, (unknown[0] if unknown else None)


def resolve_shape(shape, count: int) -> tuple[int, ...]:
    """The shape ndarray.reshape gives `count` values (missing: flat, a negative axis inferred); else CodecError."""
    parsed = _dims(shape)
    if parsed is None:
        return (count,)
    dims, unknown = parsed
    known = math.prod(d for index, d in enumerate(dims) if index != unknown)
    if unknown is not None:
        if known == 0 or count % known:
            fail(f"{count} values do not fill shape {show(shape)}")
        dims[unknown] = count // known
    elif known != count:
        fail(f"the data holds {count} values but shape {show(shape)} needs {known}")
    return tuple(dims)


def _packed_count(shape) -> int:
    """Values of a packed 4-bit array: the product of its shape's axes, which must be non-negative ints."""
    parsed = _dims(shape)
    if parsed is None or (isinstance(shape, (list, tuple)) and not shape) or parsed[1] is not None:
        fail(f"packed 4-bit data needs a shape of non-negative ints, got {show(shape)}")
    count = math.prod(parsed[0])
    if count > MAX_VALUES:
        fail(f"shape {show(shape)} holds more than {MAX_VALUES} values")
    return count


def stored_bytes(hex_data) -> bytes:
    """The bytes of the hex data, read as bytes.fromhex reads it (whitespace between bytes allowed)."""
    try:
        return unhex(hex_data)
    except CodecError:
        try:
            return bytes.fromhex(str(hex_data))
        except ValueError as error:  # also a non-ASCII HexBytes
            fail(f"data_encoded.data is not valid hex ({error})")


def raw_bytes(layout: DenseLayout) -> tuple[bytes, int]:
    """(the array's bytes, the stored bytes' length): the hex decoded, and inflated for "lz4"."""
    stored = stored_bytes(layout.hex_data)
    if layout.encoding == "none":
        return stored, len(stored)
    try:
        content_size = lz4.frame.get_frame_info(stored[:19])["content_size"]
    except RuntimeError as error:  # python-lz4 reports a bad header as RuntimeError
        fail(f"corrupt LZ4 frame header ({error})")
    if content_size > MAX_LZ4_RATIO * len(stored) + 64:  # the frame cannot hold it; guards the allocation
        fail(f"an LZ4 frame of {len(stored)} bytes cannot hold the {content_size} bytes its header records")
    try:
        return lz4.frame.decompress(stored), len(stored)  # the first frame; bytes after it are ignored
    except RuntimeError as error:
        fail(f"corrupt LZ4 frame ({error})")


def unpack_nibbles(packed: np.ndarray, count: int) -> np.ndarray:
    """`count` 4-bit codes from packed bytes (low nibble first), broadcast as NumPy assigns them."""
    codes = np.zeros(count, dtype=np.uint8)
    try:
        codes[0::2] = packed[: (count + 1) // 2] & 0x0F
        codes[1::2] = packed[: count // 2] >> 4
    except ValueError:  # fewer bytes than pairs (and not the one byte NumPy broadcasts)
        fail(f"4-bit data holds {packed.size} bytes but {count} packed values need {(count + 1) // 2}")
    return codes


def decode_full(compressed: dict) -> tuple[np.ndarray, DenseLayout]:
    """(stored values in the shape the published decoder gives them, layout): uint8 codes, float16 or float32."""
    layout = read_layout(compressed)
    raw, stored_size = raw_bytes(layout)
    buffer = np.frombuffer(raw, dtype=np.uint8)
    if layout.packed:
        count = _packed_count(layout.shape)
        values = unpack_nibbles(buffer, count)
    else:
        if len(raw) % layout.itemsize:
            fail(f"{layout.bits}-bit data holds {len(raw)} bytes, not a multiple of {layout.itemsize}")
        values = buffer.view(VALUE_DTYPES[layout.bits])
        count = values.size
    values = values.reshape(resolve_shape(layout.shape, count))
    check_size_hints(compressed, layout, len(raw), stored_size, count)
    return values, layout


def fast_prefix(compressed: dict, layout: DenseLayout, dims: list[int], count: int) -> np.ndarray | None:
    """The first `count` stored values when the data records its own size and it fits the shape, else None.

    The generator's data always does; None sends the caller to decode_full, which reads it as the reference.
    """
    hex_data = layout.hex_data
    total = math.prod(dims)
    if total > MAX_VALUES or len(hex_data) % 2 or min(dims) < 1:
        return None
    stored_size = len(hex_data) // 2
    expected = layout.byte_count(total)
    try:
        if layout.encoding == "none":
            raw_size = stored_size
            fits = stored_size >= expected if layout.packed else stored_size == expected
            buffer = read_plain(hex_data, layout.byte_count(count)) if fits else None
        else:
            raw_size = frame_content_size(hex_data)  # 0 when the frame does not record it
            fits = raw_size >= expected if layout.packed else raw_size == expected
            fits = fits and raw_size <= MAX_LZ4_RATIO * stored_size + 64 and frame_is_whole(hex_data)
            need = layout.byte_count(count)
            buffer = read_lz4(hex_data, need, False, f"{layout.bits}-bit data", "") if fits else None
    except CodecError:  # not plain hex, or a corrupt frame: decode_full reads it as the reference does
        return None
    if buffer is None:
        return None
    values = np.frombuffer(buffer, dtype=np.uint8)
    values = unpack_nibbles(values, count) if layout.packed else values.view(VALUE_DTYPES[layout.bits])[:count]
    check_size_hints(compressed, layout, raw_size, stored_size, total)
    return values
