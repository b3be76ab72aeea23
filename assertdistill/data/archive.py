"""Open a JSONL member inside a ZIP inside a ZIP without reading the inner ZIP into memory."""

from __future__ import annotations

import gzip
import io
import json
import os
import queue
import shutil
import struct
import tempfile
import threading
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from . import zipstream
from .zipstream import FileWindow, MemberStream

GZIP_MAGIC = b"\x1f\x8b"
LOCAL_HEADER_SIZE = 30  # fixed part of a ZIP local file header
MAX_HEADER_LINE_BYTES = 1 << 20  # a header line is small; record lines carry MBs of hex
# Longest line held in memory (bytes, line end excluded): the largest real record, 512 x 32100 float32
# logits as hex, is ~131 MB. A longer line is skipped while streaming (a ZIP bomb, a lost newline).
DEFAULT_MAX_RECORD_BYTES = 1 << 30
# Errors a damaged archive raises while its members are being read.
STREAM_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, OSError)
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
            zipfile.ZIP_LZMA: "lzma"}  # the compression methods read here, each with bounded output
UTF8_BOM = b"\xef\xbb\xbf"


class DataError(Exception):
    """A problem with the user's data files, reported as one clear line."""


@dataclass(frozen=True)
class OversizeLine:
    """Stands for a line longer than the bound: skipped while streaming, never held whole; callers count it."""

    size: int  # bytes of the line, line end excluded
    limit: int  # the bound it broke (--max_record_bytes)

    def __str__(self) -> str:
        return f"a line of {self.size:,} bytes, longer than --max_record_bytes {self.limit:,}"


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


def open_outer(outer_path: str) -> zipfile.ZipFile:
    """The outer ZIP, opened; DataError (one line) when it is missing, a directory or not a readable ZIP."""
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


def _checked_info(archive: zipfile.ZipFile, member: str | zipfile.ZipInfo, label: str) -> zipfile.ZipInfo:
    """A member of an archive, refused in one line when its name is ambiguous, or it is encrypted or unreadable here."""
    info = member if isinstance(member, zipfile.ZipInfo) else archive.getinfo(member)  # KeyError when absent
    name = info.filename
    copies = sum(1 for other in archive.infolist() if other.filename == name)
    if copies > 1 and not isinstance(member, zipfile.ZipInfo):
        raise DataError(f"{label} holds {copies} members named '{name}'; which one is meant is ambiguous")
    if info.flag_bits & 0x1:
        raise DataError(f"{label}/{name} is encrypted; password-protected members are not supported")
    if info.compress_type not in _METHODS:
        raise DataError(f"{label}/{name} uses ZIP compression method {info.compress_type}, which is not "
                        f"supported (only {', '.join(_METHODS.values())}); re-zip it with deflate")
    return info


def _data_offset(window: FileWindow, info: zipfile.ZipInfo, label: str) -> int:
    """Where the member's data starts in the window, after its local header; DataError if that lies."""
    window.seek(info.header_offset)
    header = window.read(LOCAL_HEADER_SIZE)
    if len(header) < LOCAL_HEADER_SIZE or header[:4] != b"PK\x03\x04":
        raise DataError(f"{label}: corrupt local header for '{info.filename}'")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    offset = info.header_offset + LOCAL_HEADER_SIZE + name_length + extra_length
    if offset + info.compress_size > window.length:
        raise DataError(f"{label}: '{info.filename}' declares {info.compress_size:,} compressed bytes, more than "
                        f"the archive holds (truncated, or its declared size lies)")
    return offset


def outer_member_names(outer_path: str) -> list[str]:
    """Names of the outer ZIP's members (DataError when it is missing or not a ZIP)."""
    with open_outer(outer_path) as outer:
        return outer.namelist()


def locate_inner_zip(outer_path: str, inner_zip_path: str) -> InnerZipLocation:
    """Find the inner ZIP's bytes; stored members are read in place, compressed ones spilled once."""
    with open_outer(outer_path) as outer:
        try:
            info = _checked_info(outer, inner_zip_path, outer_path)
        except KeyError:
            raise DataError(
                f"inner archive '{inner_zip_path}' not found in {outer_path}; "
                f"it holds {_describe_members(outer.namelist())}"
            ) from None
        whole = InnerZipLocation(outer_path, 0, os.path.getsize(outer_path))
        if info.compress_type == zipfile.ZIP_STORED:
            with FileWindow(outer_path, 0, whole.length) as window:
                offset = _data_offset(window, info, outer_path)
            return InnerZipLocation(outer_path, offset, info.compress_size)
        # A compressed member cannot be seeked cheaply: copy it to disk once, in constant memory.
        spill_dir = tempfile.gettempdir()
        free = shutil.disk_usage(spill_dir).free
        if info.file_size > free:
            raise DataError(f"{outer_path}: '{inner_zip_path}' is compressed and must be unpacked to {spill_dir}, "
                            f"which has {free:,} bytes free for its {info.file_size:,} (set TMPDIR elsewhere, "
                            f"or store the inner ZIP uncompressed)")
        spill = tempfile.NamedTemporaryFile(prefix="inner_zip_", suffix=".zip", delete=False)
        try:
            with spill, open_member(outer, whole, inner_zip_path, outer_path) as member:
                shutil.copyfileobj(member, spill, length=1 << 20)
        except DataError:
            os.unlink(spill.name)
            raise
        except STREAM_ERRORS as error:
            os.unlink(spill.name)
            raise DataError(f"{outer_path}: cannot extract '{inner_zip_path}' "
                            f"({type(error).__name__}: {error})") from error
        return InnerZipLocation(spill.name, 0, info.file_size, spilled=True)


def list_inner_zips(outer_path: str) -> list[str]:
    """Names of the *.zip members of the outer ZIP, in archive order."""
    with open_outer(outer_path) as outer:
        names = [info.filename for info in outer.infolist() if info.filename.lower().endswith(".zip")]
    if not names:
        raise DataError(f"{outer_path} holds no inner *.zip member")
    return names


@contextmanager
def inner_location(outer_path: str, inner_zip: str) -> Iterator[InnerZipLocation]:
    """Locate an inner ZIP; remove its spilled copy (if one was made) afterwards."""
    location = locate_inner_zip(outer_path, inner_zip)
    try:
        yield location
    finally:
        if location.spilled and os.path.exists(location.path):
            os.unlink(location.path)


def open_member(archive: zipfile.ZipFile, location: InnerZipLocation, member: str | zipfile.ZipInfo,
                 label: str) -> MemberStream:
    """A bounded stream of a member of `archive` (a ZIP at `location`); KeyError when absent, DataError if refused.

    A member named by its ZipInfo is taken as it is, even when other members share its name.
    """
    info = _checked_info(archive, member, label)
    window = FileWindow(location.path, location.offset, location.length)
    try:
        return MemberStream(window, info, _data_offset(window, info, label))
    except DataError:
        window.close()
        raise


@contextmanager
def open_inner_zip(location: InnerZipLocation, label: str) -> Iterator[zipfile.ZipFile]:
    """The inner ZIP as a ZipFile read in place (no copy into memory)."""
    window = FileWindow(location.path, location.offset, location.length)
    try:
        try:
            inner = zipfile.ZipFile(io.BufferedReader(window, buffer_size=1 << 20))
        except zipfile.BadZipFile as error:
            raise DataError(f"{label} is not a readable ZIP archive ({error})") from error
        with inner:
            yield inner
    finally:
        window.close()


@contextmanager
def open_jsonl_member(location: InnerZipLocation, jsonl_name: str, gzipped: bool,
                      label: str) -> Iterator[BinaryIO]:
    """Yield a binary stream of the JSONL member (gunzipped when asked) of an inner ZIP."""
    with open_inner_zip(location, label) as inner:
        try:
            member = open_member(inner, location, jsonl_name, label)
        except KeyError:
            raise DataError(
                f"'{jsonl_name}' not found in {label}; it holds {_describe_members(inner.namelist())}"
            ) from None
        with member:
            stream = member
            try:
                magic = stream.peek(2)[:2]
            except STREAM_ERRORS as error:  # a small member is read whole
                raise DataError(f"{label}/{jsonl_name}: archive is truncated or corrupt "
                                f"({type(error).__name__}: {error})") from error
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


def jsonl_members(location: InnerZipLocation, label: str) -> list[tuple[str, bool]]:
    """(name, gzipped) of every *.jsonl* member of an inner ZIP; gzip is detected by its magic bytes."""
    members = []
    with open_inner_zip(location, label) as inner:
        names = [info.filename for info in inner.infolist() if not info.is_dir()]
        for name in names:
            if ".jsonl" not in name.lower():
                continue
            try:
                with open_member(inner, location, name, label) as member:  # bounded, unlike zipfile's reader
                    members.append((name, member.read(2) == GZIP_MAGIC))
            except STREAM_ERRORS as error:
                raise DataError(f"{label}/{name}: cannot read ({type(error).__name__}: {error})") from error
    if not members:
        raise DataError(f"{label} holds no *.jsonl member; it holds {names}")
    return members


def join_pieces(pieces: list | OversizeLine) -> bytes | OversizeLine:
    """The bytes of a line held as pieces (no copy when it is one whole bytes piece); an OversizeLine as is."""
    if isinstance(pieces, OversizeLine):
        return pieces
    return zipstream.join_pieces(pieces)


def _is_blank(pieces: list) -> bool:
    """True for a line (as pieces) of whitespace only; a record line (MBs) is not joined to find out."""
    return all(not bytes(piece[:64]).strip() and not bytes(piece).strip() for piece in pieces)


def _without_bom(pieces: list) -> list:
    """The pieces of the first line without a leading UTF-8 byte-order mark (an encoding detail, not data)."""
    if b"".join(bytes(piece[:3]) for piece in pieces[:3])[:3] != UTF8_BOM:
        return pieces
    drop, kept = len(UTF8_BOM), []
    for piece in pieces:
        take = min(drop, len(piece))
        drop -= take
        if take < len(piece):
            kept.append(piece[take:] if take else piece)
    return kept or [b""]


def _read_line(stream: BinaryIO, limit: int) -> list | OversizeLine:
    """The next line as pieces (none or b"" at the end); a line over `limit` bytes is read past, never held whole.

    An over-long line of whitespace only comes back as [b" "]: blank, like any other blank line.
    """
    read_pieces = getattr(stream, "readline_pieces", None) or (lambda size: [stream.readline(size)])
    pieces = read_pieces(limit + 1)  # room for the newline
    length = sum(len(piece) for piece in pieces)
    if length <= limit or bytes(pieces[-1][-1:]) == b"\n":
        return pieces
    blank = _is_blank(pieces)
    pieces = None  # up to `limit` bytes: let them go before reading on
    while True:
        tail = read_pieces(zipstream.OUT_CHUNK_BYTES)
        length += sum(len(piece) for piece in tail)
        ended = not any(len(piece) for piece in tail)
        blank = blank and (ended or _is_blank(tail))
        if ended or bytes(tail[-1][-1:]) == b"\n":
            return [b" "] if blank else OversizeLine(length - (not ended), limit)


def iter_jsonl_lines(location: InnerZipLocation, jsonl_name: str, gzipped: bool, label: str,
                     joined: bool = True, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
                     ) -> Iterator[tuple[int, bytes | list | OversizeLine]]:
    """(line number, raw line) for every non-empty line; damage in the archive becomes a DataError.

    A line longer than max_record_bytes comes as an OversizeLine: it was read past while streaming and
    never held, so memory stays within the bound on any archive; callers count it. A UTF-8 byte-order
    mark opening the member is dropped. With joined=False each line comes as the list of pieces it is
    made of (join_pieces gives the bytes), so a reader thread can leave the 33 MB copy to the thread
    that parses the line.
    """
    with open_jsonl_member(location, jsonl_name, gzipped, label) as stream:
        line_number = 0
        while True:
            try:
                pieces = _read_line(stream, max_record_bytes)
            except STREAM_ERRORS as error:
                raise DataError(f"{label}/{jsonl_name}: archive is truncated or corrupt after "
                                f"line {line_number} ({type(error).__name__}: {error})") from error
            if isinstance(pieces, OversizeLine):
                line_number += 1
                yield line_number, pieces
                continue
            if not any(len(piece) for piece in pieces):
                return
            line_number += 1
            if line_number == 1:
                pieces = _without_bom(pieces)
            if not _is_blank(pieces):
                yield line_number, (join_pieces(pieces) if joined else pieces)
            pieces = None  # a record line is ~33 MB: let it go before the next one is read


_END = object()  # marks the end of a prefetched iterator


def prefetched(items: Iterator, depth: int = 1) -> Iterator:
    """The items of `items`, read ahead by a background thread; its exceptions re-raised in order.

    Inflating a record line (the archive's largest cost) releases the GIL, so reading the next line
    overlaps parsing, decoding and tokenizing this one. At most `depth` items wait in the queue.
    Closing the returned generator stops the thread and closes `items` there.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple) -> bool:
        """Queue `entry` unless the consumer has stopped (then False)."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
                item = None
            outcome = (_END, None)
        except BaseException as error:  # handed to the consumer, which re-raises it
            outcome = (_END, error)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        offer(outcome)

    thread = threading.Thread(target=produce, name="prefetch-lines", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
            item = None
    finally:
        stop.set()
        thread.join()


def is_header_line(line: bytes | OversizeLine) -> dict | None:
    """Return the header dict when a (first) line is a {"header": {...}} object, else None."""
    if isinstance(line, OversizeLine):
        return None
    stripped = line.strip()
    if len(stripped) > MAX_HEADER_LINE_BYTES or not stripped.startswith(b"{"):
        return None
    try:
        parsed = json.loads(stripped)
    except (ValueError, RecursionError):  # not a header; the record parser says what is wrong with it
        return None
    if isinstance(parsed, dict) and "header" in parsed:
        header = parsed["header"]
        return header if isinstance(header, dict) else {}
    return None
