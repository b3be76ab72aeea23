"""Hostile archives for the tests: ZIP bombs written in seconds, and ZIP headers that lie."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

try:  # ISA-L's CRC-32 is 3x zlib's: a 3 GiB member is checksummed in about a second
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - depends on the environment
    from zlib import crc32

CHUNK_BYTES = 8 << 20  # one repeated deflate block stands for this many bytes of the long line


def _deflated(data: bytes, mode: int) -> bytes:
    """Raw deflate of `data` from a fresh compressor: FULL_FLUSH ends byte-aligned with no back-references out."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(mode)


def bomb_member(before: bytes, byte: bytes, count: int, after: bytes) -> tuple[bytes, int, int]:
    """(raw deflate, CRC-32, size) of before + byte * count + after, made without ever holding the long part.

    The long part is one compressed block of CHUNK_BYTES repeated: each copy refers only to itself, so
    the concatenation is a valid deflate stream (about 1000x smaller than what it inflates to).
    """
    assert count % CHUNK_BYTES == 0
    chunk = byte * CHUNK_BYTES
    block = _deflated(chunk, zlib.Z_FULL_FLUSH)
    crc = crc32(before)
    for _ in range(count // CHUNK_BYTES):
        crc = crc32(chunk, crc)
    crc = crc32(after, crc)
    data = (_deflated(before, zlib.Z_FULL_FLUSH) + block * (count // CHUNK_BYTES)
            + _deflated(after, zlib.Z_FINISH))
    return data, crc & 0xFFFFFFFF, len(before) + count + len(after)


def zip_with_raw_member(name: str, data: bytes, crc: int, size: int) -> bytes:
    """A one-member ZIP (deflate; ZIP64 sizes from 4 GiB on) holding already-compressed `data`."""
    encoded, zip64 = name.encode(), size >= 0xFFFFFFFF or len(data) >= 0xFFFFFFFF
    sizes = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (len(data), size)
    extra = struct.pack("<HHQQ", 1, 16, size, len(data)) if zip64 else b""
    version = 45 if zip64 else 20
    fields = struct.pack("<HHHHHIII", version, 0, zipfile.ZIP_DEFLATED, 0, 0x21, crc, *sizes)
    local = b"PK\x03\x04" + fields + struct.pack("<HH", len(encoded), len(extra)) + encoded + extra
    central = (b"PK\x01\x02" + struct.pack("<H", version) + fields
               + struct.pack("<HHHHHII", len(encoded), len(extra), 0, 0, 0, 0, 0) + encoded + extra)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def outer_zip(path: str, inner_zips: dict[str, bytes]) -> None:
    """Write an outer ZIP storing the given inner ZIPs (name -> bytes) uncompressed."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as outer:
        for name, data in inner_zips.items():
            outer.writestr(name, data)


def inner_zip(jsonl_name: str, payload: bytes, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """An inner ZIP with one JSONL member."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr(jsonl_name, payload)
    return buffer.getvalue()


def nested_archive(path: str, train_payload: bytes, val_payload: bytes, train_inner: bytes | None = None,
                   compression: int = zipfile.ZIP_DEFLATED) -> dict:
    """An outer ZIP with training and validation inner ZIPs of raw JSONL payloads; returns script.py flags.

    train_inner, when given, is used as the training inner ZIP's bytes as they are (a hand-made or damaged one).
    """
    names = {"train": ("codet5/train.jsonl.zip", "train.jsonl"), "val": ("codet5/val.jsonl.zip", "val.jsonl")}
    outer_zip(path, {names["train"][0]: train_inner or inner_zip(names["train"][1], train_payload, compression),
                     names["val"][0]: inner_zip(names["val"][1], val_payload, compression)})
    flags = {"--distillation_data_path": path}
    for split, (inner_path, jsonl_name) in names.items():
        flags[f"--{split}_outer_zip_internal_path"] = inner_path
        flags[f"--{split}_inner_zip_jsonl_filename"] = jsonl_name
    return flags


def jsonl(lines: list[bytes | str], header: bool = True, newline: bytes = b"\n") -> bytes:
    """A JSONL payload of raw lines, with a header line first when asked."""
    raw = [line.encode() if isinstance(line, str) else line for line in lines]
    if header:
        raw.insert(0, json.dumps({"header": {"dataset_type": "training", "item_count": len(lines)}}).encode())
    return b"".join(line + newline for line in raw)


# Offsets of fields in a local file header and in a central directory header (PKWARE APPNOTE 4.3.7, 4.3.12).
_FIELDS = {"flags": (6, 8, "<H"), "method": (8, 10, "<H"), "crc": (14, 16, "<I"),
           "compressed_size": (18, 20, "<I"), "size": (22, 24, "<I")}


def patched(zip_bytes: bytes, member: str, field: str, value: int) -> bytes:
    """The ZIP with one field of one member's local and central headers set to `value` (a lie)."""
    local_offset, central_offset, fmt = _FIELDS[field]
    data = bytearray(zip_bytes)
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        info = archive.getinfo(member)
    struct.pack_into(fmt, data, info.header_offset + local_offset, value)
    position = 0
    while (position := data.find(b"PK\x01\x02", position)) >= 0:
        name_length = struct.unpack_from("<H", data, position + 28)[0]
        if data[position + 46 : position + 46 + name_length] == member.encode():
            struct.pack_into(fmt, data, position + central_offset, value)
        position += 4
    return bytes(data)
