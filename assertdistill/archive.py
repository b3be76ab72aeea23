"""Open a JSONL member inside a ZIP inside a ZIP without reading the inner ZIP into memory."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

GZIP_MAGIC = b"\x1f\x8b"
LOCAL_HEADER_SIZE = 30  # fixed part of a ZIP local file header
MAX_HEADER_LINE_BYTES = 1 << 20  # a header line is small; record lines carry MBs of hex


class DataError(Exception):
    """A problem with the user's data files, reported as one clear line."""


class _FileWindow(io.RawIOBase):
    """A read-only, seekable view of bytes [start, start + length) of a file."""

    def __init__(self, path: str, start: int, length: int):
        super().__init__()
        self._file = open(path, "rb")
        self._start = start
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        remaining = self._length - self._position
        if remaining <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), remaining)]
        self._file.seek(self._start + self._position)
        count = self._file.readinto(view)
        self._position += count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


@dataclass
class InnerZipLocation:
    """Where the bytes of the inner ZIP lie: a file path, an offset and a length."""

    path: str
    offset: int
    length: int
    spilled: bool = False  # True when the inner ZIP was copied to a temporary file


def _describe_members(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return f"[{shown}{more}]" if names else "[nothing]"


def _open_outer(outer_path: str) -> zipfile.ZipFile:
    if not os.path.exists(outer_path):
        raise DataError(f"distillation data not found: {outer_path}")
    if os.path.isdir(outer_path):
        raise DataError(f"distillation data path is a directory, expected a ZIP file: {outer_path}")
    try:
        return zipfile.ZipFile(outer_path)
    except zipfile.BadZipFile as error:
        raise DataError(f"{outer_path} is not a readable ZIP archive ({error})") from error
    except OSError as error:
        raise DataError(f"cannot open {outer_path}: {error}") from error


def locate_inner_zip(outer_path: str, inner_zip_path: str) -> InnerZipLocation:
    """Find the inner ZIP's bytes; stored members are read in place, compressed ones spilled once."""
    with _open_outer(outer_path) as outer:
        try:
            info = outer.getinfo(inner_zip_path)
        except KeyError:
            raise DataError(
                f"inner archive '{inner_zip_path}' not found in {outer_path}; "
                f"it holds {_describe_members(outer.namelist())}"
            ) from None
        if info.compress_type == zipfile.ZIP_STORED:
            with open(outer_path, "rb") as raw:
                raw.seek(info.header_offset)
                header = raw.read(LOCAL_HEADER_SIZE)
            if len(header) < LOCAL_HEADER_SIZE or header[:4] != b"PK\x03\x04":
                raise DataError(f"{outer_path}: corrupt local header for '{inner_zip_path}'")
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            offset = info.header_offset + LOCAL_HEADER_SIZE + name_length + extra_length
            return InnerZipLocation(outer_path, offset, info.compress_size)
        # A compressed member cannot be seeked cheaply: copy it to disk once, in constant memory.
        spill = tempfile.NamedTemporaryFile(prefix="inner_zip_", suffix=".zip", delete=False)
        try:
            with spill, outer.open(info) as member:
                shutil.copyfileobj(member, spill, length=1 << 20)
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            os.unlink(spill.name)
            raise DataError(f"{outer_path}: cannot extract '{inner_zip_path}' ({error})") from error
        return InnerZipLocation(spill.name, 0, info.file_size, spilled=True)


@contextmanager
def open_jsonl_member(location: InnerZipLocation, jsonl_name: str, gzipped: bool,
                      label: str) -> Iterator[BinaryIO]:
    """Yield a binary stream of the JSONL member (gunzipped when asked) of an inner ZIP."""
    window = _FileWindow(location.path, location.offset, location.length)
    try:
        try:
            inner = zipfile.ZipFile(io.BufferedReader(window, buffer_size=1 << 20))
        except zipfile.BadZipFile as error:
            raise DataError(f"{label} is not a readable ZIP archive ({error})") from error
        with inner:
            try:
                member = inner.open(jsonl_name)
            except KeyError:
                raise DataError(
                    f"'{jsonl_name}' not found in {label}; it holds {_describe_members(inner.namelist())}"
                ) from None
            with member:
                stream = io.BufferedReader(member, buffer_size=1 << 20)
                magic = stream.peek(2)[:2]
                if gzipped and magic != GZIP_MAGIC and magic:
                    raise DataError(
                        f"{label}/{jsonl_name} is not gzip-compressed; drop the *_jsonl_is_gzipped flag")
                if not gzipped and magic == GZIP_MAGIC:
                    raise DataError(
                        f"{label}/{jsonl_name} is gzip-compressed; pass the matching *_jsonl_is_gzipped flag")
                if gzipped:
                    with gzip.GzipFile(fileobj=stream) as unzipped:
                        yield io.BufferedReader(unzipped, buffer_size=1 << 20)
                else:
                    yield stream
    finally:
        window.close()


def is_header_line(line: bytes) -> dict | None:
    """Return the header dict when a (first) line is a {"header": {...}} object, else None."""
    stripped = line.strip()
    if len(stripped) > MAX_HEADER_LINE_BYTES or not stripped.startswith(b"{"):
        return None
    try:
        parsed = json.loads(stripped)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(parsed, dict) and "header" in parsed:
        header = parsed["header"]
        return header if isinstance(header, dict) else {}
    return None
