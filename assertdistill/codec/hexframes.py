"""Hex-encoded LZ4 frames, the container of every compressed_logits array (docs/DATA_FORMAT.md).

An array's bytes are one LZ4 frame (or, with "encoding": "none", the bytes themselves) written as a hex
string, described by {encoding, data, original_size, compressed_size}. check_array (the top-k arrays)
checks the sizes before anything is allocated; the dense form treats them as hints (dense.py). A reader
can inflate only a prefix: training needs the first positions. Every problem raises CodecError with a
one-line message.
"""

import binascii
import reprlib

import lz4.frame
import numpy as np

HEX_CHUNK = 1 << 18  # hex characters decoded per step (256 KiB -> 128 KiB of frame bytes)
MAX_LZ4_RATIO = 256  # an LZ4 frame cannot expand more than ~255x; guards allocations
MAX_FRAME_HEADER = 19  # bytes: magic number + the largest frame descriptor


class CodecError(ValueError):
    """Raised for any compressed_logits dict that cannot be decoded; message says what is wrong."""


class HexBytes:
    """A hex string still inside the record line's bytes: what the codec reads in place of a str.

    Slicing gives memoryviews that binascii decodes directly, so a 33 MB hex string is never copied
    into a str when training reads only its first positions (jsonline.loads_record_line(lazy_hex=True)).
    """

    __slots__ = ("view",)

    def __init__(self, view: memoryview):
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, key: slice) -> memoryview:
        return self.view[key]

    def __str__(self) -> str:
        return str(self.view, "ascii")


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = 40


def show(value) -> str:
    """A bounded, one-line repr of a value taken from the file."""
    return _SHORT_REPR.repr(value)


def fail(message: str):
    """Raise CodecError for a compressed_logits dict."""
    raise CodecError(f"compressed_logits: {message}")


def get_key(mapping: dict, key: str, where: str = ""):
    """mapping[key], or a CodecError naming the missing key (`where` is its path prefix)."""
    if key not in mapping:
        fail(f"missing key {where + key!r}")
    return mapping[key]


def is_int(value) -> bool:
    """True for Python and NumPy integers, not for bools."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_array(encoded, where: str, data_name: str, size_name: str, shape_name: str,
                expected_size: int, hint: str = "") -> tuple[str, str]:
    """Check one {encoding, data, original_size, compressed_size} dict that must hold expected_size bytes."""
    if not isinstance(encoded, dict):
        fail(f"{where} must be a dict, got {type(encoded).__name__}")
    encoding = get_key(encoded, "encoding", f"{where}.")
    hex_data = get_key(encoded, "data", f"{where}.")
    if not isinstance(encoding, str) or encoding not in ("lz4", "none"):
        fail(f"unknown encoding {show(encoding)} (expected 'lz4' or 'none')")
    if not isinstance(hex_data, (str, HexBytes)) or len(hex_data) % 2:
        what = f"odd length {len(hex_data)}" if isinstance(hex_data, (str, HexBytes)) else type(hex_data).__name__
        fail(f"{where}.data must be a hex string of even length, got {what}")
    stored_size = len(hex_data) // 2
    original_size = get_key(encoded, "original_size", f"{where}.")
    if not is_int(original_size) or original_size != expected_size:
        fail(f"{where}.original_size is {show(original_size)} but {size_name} needs {expected_size}{hint}")
    compressed_size = get_key(encoded, "compressed_size", f"{where}.")
    if not is_int(compressed_size) or compressed_size != stored_size:
        fail(f"{where}.compressed_size is {show(compressed_size)} "
             f"but the hex data holds {stored_size} bytes")
    # Both size checks below run before anything is allocated, so a bad dict cannot ask for 1 TB.
    if encoding == "none" and stored_size != expected_size:
        fail(f"{data_name} holds {stored_size} bytes but {shape_name} needs {expected_size}")
    if encoding == "lz4":
        if expected_size > MAX_LZ4_RATIO * stored_size + 64:
            fail(f"an LZ4 frame of {stored_size} bytes cannot hold "
                 f"the {expected_size} bytes {shape_name} needs")
        declared = frame_content_size(hex_data)
        if declared not in (0, expected_size):  # 0: the writer did not store the size
            fail(f"{data_name} holds {declared} bytes but {shape_name} needs {expected_size}")
    return encoding, hex_data


def unhex(hex_chunk: str | memoryview | HexBytes) -> bytes:
    """The bytes of a piece of hex data (CodecError when it is not hex)."""
    try:
        return binascii.a2b_hex(hex_chunk.view if isinstance(hex_chunk, HexBytes) else hex_chunk)
    except ValueError as error:  # binascii.Error and non-ASCII str are both ValueErrors
        fail(f"data_encoded.data is not valid hex ({error})")


def frame_content_size(hex_data: str) -> int:
    """The content size an LZ4 frame's header records (0 when it records none)."""
    header = unhex(hex_data[:2 * MAX_FRAME_HEADER])
    try:
        return lz4.frame.get_frame_info(header)["content_size"]
    except RuntimeError as error:  # python-lz4 reports a bad header as RuntimeError
        fail(f"corrupt LZ4 frame header ({error})")


def read_plain(hex_data: str, need: int) -> bytearray:
    """The first `need` bytes of plain hex data, decoded chunk by chunk."""
    buffer = bytearray(need)
    view = memoryview(buffer)
    for start in range(0, 2 * need, HEX_CHUNK):
        chunk = unhex(hex_data[start : min(start + HEX_CHUNK, 2 * need)])
        view[start // 2 : start // 2 + len(chunk)] = chunk
    return buffer


def read_whole_lz4(hex_data: str, need: int) -> bytes | None:
    """The frame inflated in one call when it is one well-formed frame of exactly `need` bytes, else None.

    Twice as fast as the streaming reader on a whole block; on None that reader runs and names the problem.
    """
    frame = unhex(hex_data)
    try:
        content_size = lz4.frame.get_frame_info(frame[:MAX_FRAME_HEADER])["content_size"]
    except RuntimeError:
        return None
    if content_size != need:  # 0 (not recorded) or a frame of another size: let the streaming reader check
        return None
    try:
        raw = lz4.frame.decompress(frame)
    except RuntimeError:
        return None
    if len(raw) != need or lz4_frame_length(frame) != len(frame):  # decompress() ignores trailing bytes
        return None
    return raw


def lz4_frame_length(frame: bytes) -> int | None:
    """Bytes of the first LZ4 frame in `frame`, found by walking its block headers (None if cut short)."""
    flags = frame[4]
    position = 4 + 2 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0) + 1  # magic, FLG, BD, size, dict, HC
    block_checksum = 4 if flags & 0x10 else 0
    while position + 4 <= len(frame):
        block_size = int.from_bytes(frame[position : position + 4], "little")
        position += 4
        if block_size == 0:  # the end mark
            return position + (4 if flags & 0x04 else 0)
        position += (block_size & 0x7FFFFFFF) + block_checksum
    return None


def frame_is_whole(hex_data: str | HexBytes) -> bool:
    """True when a hex LZ4 frame's blocks run to its end mark inside the data (block headers read, nothing inflated).

    Bytes after the end mark are allowed (lz4.frame.decompress ignores them); a cut frame is not.
    """
    size = len(hex_data) // 2
    if size < 7:  # magic number, FLG, BD, header checksum
        return False
    flags = unhex(hex_data[8:10])[0]  # FLG, after the 4-byte magic number
    position = 4 + 2 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0) + 1  # magic, FLG, BD, size, dict, HC
    block_checksum = 4 if flags & 0x10 else 0
    while position + 4 <= size:
        block_size = int.from_bytes(unhex(hex_data[2 * position : 2 * position + 8]), "little")
        position += 4
        if block_size == 0:  # the end mark, then the optional content checksum
            return position + (4 if flags & 0x04 else 0) <= size
        position += (block_size & 0x7FFFFFFF) + block_checksum
    return False


def read_lz4(hex_data: str, need: int, full: bool, data_name: str, shape_name: str) -> bytearray | bytes:
    """Inflate the first `need` bytes; when `full`, also require the frame to end right there."""
    if full:
        raw = read_whole_lz4(hex_data, need)
        if raw is not None:
            return raw
    buffer = bytearray(need)
    view = memoryview(buffer)
    decompressor = lz4.frame.LZ4FrameDecompressor()
    got, position = 0, 0
    try:
        while True:
            if decompressor.needs_input:
                if decompressor.eof or position >= len(hex_data):
                    break
                chunk = unhex(hex_data[position : position + HEX_CHUNK])
                position += HEX_CHUNK
            else:
                chunk = b""
            piece = decompressor.decompress(chunk, max_length=need - got if got < need else 1)
            if got + len(piece) > need:
                fail(f"{data_name} holds more than the {need} bytes {shape_name} needs")
            view[got : got + len(piece)] = piece
            got += len(piece)
            if (got == need and not full) or decompressor.eof or (not piece and not chunk):
                break
    except RuntimeError as error:  # python-lz4 reports every corrupt frame as RuntimeError
        fail(f"corrupt LZ4 frame ({error})")
    if got < need:
        truncated = "" if decompressor.eof else " (LZ4 frame truncated)"
        fail(f"{data_name} holds {got} bytes but {shape_name} needs {need}{truncated}")
    if full and not decompressor.eof:
        fail("truncated LZ4 frame (no end mark)")
    if full and (decompressor.unused_data or position < len(hex_data)):
        fail("unexpected bytes after the end of the LZ4 frame")
    return buffer
