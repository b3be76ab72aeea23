"""The bytes of one ZIP member read straight from its file, in bounded pieces (archive.py's low level).

FileWindow is a seekable view of part of a file (an inner ZIP stored inside the outer one);
MemberStream inflates one member from such a window (stored, deflate, bzip2, lzma) as zipfile does,
with the same checks and exception types, but no call produces more than OUT_CHUNK_BYTES.
"""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import zipfile
import zlib

try:  # ISA-L inflates DEFLATE 2-3x faster than zlib; optional, same output
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - depends on the environment
    _isal_zlib = None

RAW_CHUNK_BYTES = 1 << 21  # compressed bytes read from the file at a time (2 MiB)
OUT_CHUNK_BYTES = 1 << 23  # most bytes one inflate call may produce (few GIL hand-offs per line)
_INFLATE_ERRORS = (zlib.error,) + ((_isal_zlib.error,) if _isal_zlib is not None else ())


class FileWindow(io.RawIOBase):
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

    @property
    def length(self) -> int:
        return self._length

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


class _LzmaZipDecompressor:
    """ZIP's LZMA (method 14): a 4-byte header and the LZMA1 properties, then a raw LZMA1 stream."""

    def __init__(self):
        self._header = b""
        self._lzma = None

    @property
    def eof(self) -> bool:
        return self._lzma is not None and self._lzma.eof

    @property
    def needs_input(self) -> bool:
        return self._lzma is None or self._lzma.needs_input

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._lzma is None:
            self._header += data
            if len(self._header) < 4:
                return b""
            size = struct.unpack("<H", self._header[2:4])[0]
            if len(self._header) < 4 + size:
                return b""
            properties = self._header[4 : 4 + size]
            filters = [lzma._decode_filter_properties(lzma.FILTER_LZMA1, properties)]  # as zipfile does
            self._lzma = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)
            data, self._header = self._header[4 + size :], b""
        return self._lzma.decompress(data, max_length)


class MemberStream(io.BufferedIOBase):
    """The uncompressed bytes of a ZIP member (stored, deflate, bzip2, lzma), read straight from its file window.

    Does what zipfile's member reader does (inflate, size and CRC-32 checks, the same exception types:
    zlib.error, EOFError, BadZipFile), in 1 MiB reads with ISA-L when installed, and gives lines
    without copying them through a buffer: a 33 MB record line is joined once from the inflated pieces.
    Unlike zipfile's reader, no call inflates more than OUT_CHUNK_BYTES, whatever the method: a member
    that inflates 1,000,000x (bzip2 does on one repeated byte) never lands in memory whole.
    """

    def __init__(self, window: FileWindow, info: zipfile.ZipInfo, data_offset: int):
        super().__init__()
        self._window = window
        self._window.seek(data_offset)
        self._name = info.filename
        self._raw_left = info.compress_size
        self._size_left = info.file_size
        self._expected_crc = info.CRC
        self._crc = 0
        codec = _isal_zlib or zlib
        self._crc32 = codec.crc32
        self._deflate = info.compress_type == zipfile.ZIP_DEFLATED
        self._inflater = (codec.decompressobj(-15) if self._deflate
                          else bz2.BZ2Decompressor() if info.compress_type == zipfile.ZIP_BZIP2
                          else _LzmaZipDecompressor() if info.compress_type == zipfile.ZIP_LZMA else None)
        self._chunk = b""  # the current uncompressed piece; bytes before _position were consumed
        self._position = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._window.close()
        super().close()

    def _read_raw(self) -> bytes:
        data = self._window.read(min(RAW_CHUNK_BYTES, self._raw_left))
        if not data:
            raise EOFError(f"{self._name}: the archive ends inside the member")
        self._raw_left -= len(data)
        return data

    def _next_piece(self) -> bytes:
        """The next uncompressed piece; b"" once the member has ended (after the size and CRC checks)."""
        while not self._ended:
            if self._inflater is None:
                piece = self._read_raw() if self._raw_left else b""
                self._ended = not self._raw_left
            elif self._deflate:
                data = self._inflater.unconsumed_tail
                if not data and self._raw_left:
                    data = self._read_raw()
                try:  # with no new input, ISA-L may still hold output back from the last call
                    piece = self._inflater.decompress(data, OUT_CHUNK_BYTES)
                except _INFLATE_ERRORS as error:  # ISA-L has its own error type: report it as zlib does
                    raise zlib.error(f"{self._name}: {error}") from None
                self._ended = self._inflater.eof
                if not piece and not data and not self._ended:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            else:  # bzip2, lzma: input they could not yet turn into output is kept inside the decompressor
                data = self._read_raw() if self._inflater.needs_input and self._raw_left else b""
                try:
                    piece = self._inflater.decompress(data, OUT_CHUNK_BYTES)
                except (OSError, EOFError, lzma.LZMAError) as error:  # bz2 says OSError: report it as zipfile does
                    raise zipfile.BadZipFile(f"{self._name}: {error}") from None
                # LZMA without an end marker ends with its input; the size and CRC checks below tell
                self._ended = self._inflater.eof or (not piece and not self._raw_left and self._inflater.needs_input)
            if len(piece) > self._size_left:
                raise zipfile.BadZipFile(f"{self._name}: more data than the {len(piece)} bytes declared")
            self._size_left -= len(piece)
            self._crc = self._crc32(piece, self._crc)
            if self._ended and (self._size_left or self._crc != self._expected_crc):
                raise zipfile.BadZipFile(f"Bad CRC-32 or size for file {self._name!r}")
            if piece:
                return piece
        return b""

    def _current(self) -> memoryview | None:
        """Unconsumed bytes of the current piece, refilled when empty; None at the end of the member."""
        if self._position >= len(self._chunk):
            self._chunk, self._position = self._next_piece(), 0
            if not self._chunk:
                return None
        return memoryview(self._chunk)[self._position:]

    def readline(self, size: int | None = -1) -> bytes:
        return join_pieces(self.readline_pieces(size))

    def readline_pieces(self, size: int | None = -1) -> list:
        """readline's bytes as the list of pieces (bytes or memoryviews) it would join."""
        pieces, length, limit = [], 0, -1 if size is None or size < 0 else size
        while limit < 0 or length < limit:
            if self._position >= len(self._chunk) and self._current() is None:
                break
            end = self._chunk.find(b"\n", self._position)
            end = len(self._chunk) if end < 0 else end + 1
            if limit >= 0:
                end = min(end, self._position + limit - length)
            if self._position == 0 and end == len(self._chunk):
                pieces.append(self._chunk)  # a whole piece: no copy
            else:
                pieces.append(memoryview(self._chunk)[self._position:end])
            length += end - self._position
            self._position = end
            if self._chunk[end - 1 : end] == b"\n":
                break
        return pieces

    def read(self, size: int | None = -1) -> bytes:
        pieces, length = [], 0
        while size is None or size < 0 or length < size:
            view = self._current()
            if view is None:
                break
            take = len(view) if size is None or size < 0 else min(len(view), size - length)
            pieces.append(view[:take])
            self._position += take
            length += take
        return b"".join(pieces)

    def read1(self, size: int = -1) -> bytes:
        view = self._current()
        if view is None:
            return b""
        take = len(view) if size < 0 else min(len(view), size)
        self._position += take
        return bytes(view[:take])

    def peek(self, size: int = 0) -> bytes:
        view = self._current()
        return b"" if view is None else bytes(view[: max(size, 1)])


def join_pieces(pieces: list) -> bytes:
    """The bytes of a line held as pieces (no copy when it is one whole bytes piece)."""
    if len(pieces) == 1 and isinstance(pieces[0], bytes):
        return pieces[0]
    return b"".join(pieces)
