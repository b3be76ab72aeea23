"""Rewrite the compressed_logits of every record of a nested-ZIP archive in another format (compress.py convert).

The layout is kept: every outer member in order, inner ZIP and JSONL member names, compression methods,
gzip, the header (with args and compression stats updated and the conversion recorded under
"converted") and every other record field. A record whose logits cannot be decoded or re-encoded is
copied unchanged and counted by reason. Memory stays bounded by a few records; the converted JSONL is
staged in a temporary directory next to the output so the header can carry the final sizes.
"""

from __future__ import annotations

import datetime
import gzip
import itertools
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ..codec.codec import compress_logits, compress_topk, decode_quantized, hex_size
from ..codec.hexframes import CodecError
from .archive import (
    DEFAULT_MAX_RECORD_BYTES,
    DataError,
    InnerZipLocation,
    OversizeLine,
    inner_location,
    is_header_line,
    iter_jsonl_lines,
    jsonl_members,
    open_inner_zip,
    open_member,
    open_outer,
)

FORMATS = ("topk", "4", "8", "16", "32")  # values of --to
_READ_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)  # a damaged input member


@dataclass(frozen=True)
class Target:
    """The format to convert to: 'topk' with k, or a bit depth; optionally only the first positions."""

    to: str
    k: int | None = None
    max_positions: int | None = None

    def __post_init__(self):
        assert self.to in FORMATS and (self.to != "topk" or (self.k or 0) >= 1)

    def encode(self, logits) -> dict:
        """A compressed_logits dict of logits (T, V) or (1, T, V) in this format."""
        return compress_topk(logits, self.k) if self.to == "topk" else compress_logits(logits, bits=int(self.to))

    @property
    def label(self) -> str:
        return f"topk k={self.k}" if self.to == "topk" else f"{self.to}-bit"


@dataclass
class MemberStats:
    """What converting one JSONL member did."""

    inner_zip: str
    member: str
    converted: int = 0
    kept: Counter = field(default_factory=Counter)  # reason -> records copied unchanged
    dropped: Counter = field(default_factory=Counter)  # reason -> records not copied (too_large: never read whole)
    bytes: Counter = field(default_factory=Counter)  # float32 / source_hex / hex / lz4, converted records only

    @property
    def records(self) -> int:
        """Records read from the member: converted, kept unchanged or dropped."""
        return self.converted + sum(self.kept.values()) + sum(self.dropped.values())

    def describe(self) -> str:
        """One line: counts and sizes before -> after."""
        text = f"{self.inner_zip} / {self.member}: {self.converted} records converted"
        if self.kept:
            text += ", kept unchanged: " + ", ".join(f"{reason} {n}" for reason, n in sorted(self.kept.items()))
        if self.dropped:
            text += ", dropped: " + ", ".join(f"{reason} {n}" for reason, n in sorted(self.dropped.items()))
        if self.converted:
            before, after = self.bytes["source_hex"], self.bytes["hex"]
            text += f"; logits as hex {_size(before)} -> {_size(after)} ({before / max(after, 1):.1f}x smaller)"
        return text


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000


def _decoded_logits(compressed: dict, max_positions: int | None) -> np.ndarray:
    """float32 logits in the stored shape (every batch row): decompress_logits in NumPy, no torch tensors."""
    quantized = decode_quantized(compressed, max_positions, all_rows=True)
    logits = quantized.values.astype(np.float32)  # (R * T', V)
    if quantized.bits in (4, 8):  # the same float32 arithmetic as codec.dequantize_codes
        logits -= np.float32(quantized.zero_point)
        logits *= np.float32(quantized.scale)
    shape = quantized.shape  # as decoded: an int or inferred axis resolved
    return logits.reshape(shape[:-2] + (-1, shape[-1]) if len(shape) > 1 else shape)


def convert_line(line: bytes, target: Target) -> tuple[bytes, str | None, dict | None]:
    """(new line, None, sizes) for a converted record; (the line unchanged, reason, None) otherwise."""
    unchanged = line if line.endswith(b"\n") else line + b"\n"
    try:
        entry = json.loads(line)
    except RecursionError:
        return unchanged, "too_deeply_nested", None
    except ValueError:  # UnicodeDecodeError too
        return unchanged, "invalid_json", None
    if not isinstance(entry, dict):
        return unchanged, "not_an_object", None
    source = entry.get("compressed_logits")
    if source is None:
        return unchanged, "no_compressed_logits", None
    try:
        stored = target.encode(_decoded_logits(source, target.max_positions))
    except CodecError:
        return unchanged, "bad_compressed_logits", None
    except ValueError:  # the values do not fit the target format (float16 overflow)
        return unchanged, "not_representable", None
    entry["compressed_logits"] = stored
    sizes = {"float32": stored["compression"]["original_size_bytes"], "source_hex": hex_size(source),
             "hex": hex_size(stored), "lz4": stored["compression"]["final_size_bytes"]}
    return (json.dumps(entry) + "\n").encode(), None, sizes


def updated_header(header: dict, target: Target, stats: MemberStats, records: int) -> dict:
    """The header with item_count, args and compression stats of the converted member."""
    header = dict(header)
    args = dict(header["args"]) if isinstance(header.get("args"), dict) else {}
    previous = {"compression": header.get("compression"), "args.bits": args.get("bits")}
    for key in ("logits_format", "topk_k"):  # set again below for top-k
        args.pop(key, None)
    if target.to == "topk":
        args.update({"bits": 16, "logits_format": "topk", "topk_k": target.k})  # values are float16
    else:
        args["bits"] = int(target.to)
    header["args"] = args
    header["item_count"] = records
    header["compression"] = {
        "format": "topk" if target.to == "topk" else "lz4", "bits": args["bits"], "k": target.k,
        "original_size_bytes": stats.bytes["float32"], "final_size_bytes": stats.bytes["hex"],  # hex as stored
        "lz4_size_bytes": stats.bytes["lz4"],
        "compression_ratio": stats.bytes["float32"] / stats.bytes["hex"] if stats.bytes["hex"] else None,
    }
    header["converted"] = {
        "tool": "compress.py convert", "to": target.label, "max_positions": target.max_positions,
        "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "records_converted": stats.converted, "records_kept_unchanged": dict(sorted(stats.kept.items())),
        "records_dropped": dict(sorted(stats.dropped.items())),
        "previous": previous,
    }
    return header


@dataclass
class _Job:
    """What every member conversion of one run shares."""

    in_path: str
    target: Target
    work_dir: str
    progress: bool
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


def _convert_member(job: _Job, location, label: str, name: str, gzipped: bool,
                    stats: MemberStats) -> tuple[dict | None, str]:
    """Write the converted records to a staging file; return (updated header or None, staging path)."""
    body_path = os.path.join(job.work_dir, "body.jsonl")
    lines = iter_jsonl_lines(location, name, gzipped, label, max_record_bytes=job.max_record_bytes)
    header, records = None, 0
    first = next(lines, None)
    if first is not None and (header := is_header_line(first[1])) is None:
        lines = itertools.chain([first], lines)
    total = header.get("item_count") if header else None
    bar = tqdm(total=total if isinstance(total, int) else None, desc=name, unit="record", leave=False,
               disable=not job.progress, dynamic_ncols=True)
    with open(body_path, "wb") as body, bar:
        for _, line in lines:
            if isinstance(line, OversizeLine):  # read past, not held: it cannot be copied
                stats.dropped["too_large"] += 1
                continue
            new_line, kept_reason, sizes = convert_line(line, job.target)
            body.write(new_line)
            records += 1
            bar.update(1)
            if kept_reason is None:
                stats.converted += 1
                stats.bytes.update(sizes)
            else:
                stats.kept[kept_reason] += 1
    return (None if header is None else updated_header(header, job.target, stats, records)), body_path


def _write_member(inner_out: zipfile.ZipFile, info: zipfile.ZipInfo, header: dict | None, body_path: str,
                  gzipped: bool) -> None:
    with inner_out.open(_copy_info(info), "w", force_zip64=True) as member:
        stream = gzip.GzipFile(fileobj=member, mode="wb") if gzipped else member
        try:
            if header is not None:
                stream.write((json.dumps({"header": header}) + "\n").encode())
            with open(body_path, "rb") as body:
                shutil.copyfileobj(body, stream, length=1 << 20)
        finally:
            if gzipped:
                stream.close()


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    copy = zipfile.ZipInfo(info.filename, info.date_time)
    copy.compress_type, copy.external_attr, copy.comment = info.compress_type, info.external_attr, info.comment
    return copy


def _copy_member(source: zipfile.ZipFile, location: InnerZipLocation, label: str, info: zipfile.ZipInfo,
                 out: zipfile.ZipFile) -> None:
    if info.is_dir():
        out.writestr(_copy_info(info), b"")
        return
    with open_member(source, location, info, label) as reader, \
            out.open(_copy_info(info), "w", force_zip64=True) as writer:
        shutil.copyfileobj(reader, writer, length=1 << 20)


def _convert_inner(job: _Job, inner_name: str, inner_path: str) -> list[MemberStats]:
    """Write the converted copy of one inner ZIP to inner_path."""
    label = f"{job.in_path}:{inner_name}"
    results = []
    with inner_location(job.in_path, inner_name) as location:
        members = dict(jsonl_members(location, label))
        with open_inner_zip(location, label) as inner, zipfile.ZipFile(inner_path, "w") as inner_out:
            for info in inner.infolist():
                if info.filename not in members:
                    _copy_member(inner, location, label, info, inner_out)
                    continue
                stats = MemberStats(inner_name, info.filename)
                gzipped = members[info.filename]
                header, body_path = _convert_member(job, location, label, info.filename, gzipped, stats)
                _write_member(inner_out, info, header, body_path, gzipped)
                os.unlink(body_path)
                results.append(stats)
    return results


def convert_archive(in_path: str, out_path: str, target: Target, progress: bool = True,
                    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> list[MemberStats]:
    """Write a copy of in_path with every record's logits in the target format; return per-member stats."""
    if os.path.abspath(in_path) == os.path.abspath(out_path):
        raise DataError("the output must be a different file than the input")
    work_dir = tempfile.mkdtemp(prefix=".convert_", dir=os.path.dirname(os.path.abspath(out_path)))
    partial = os.path.join(work_dir, "out.zip")
    results = []
    try:
        with open_outer(in_path) as outer, zipfile.ZipFile(partial, "w") as outer_out:
            job = _Job(in_path, target, work_dir, progress, max_record_bytes)
            whole = InnerZipLocation(in_path, 0, os.path.getsize(in_path))
            for info in outer.infolist():
                try:
                    if not info.filename.lower().endswith(".zip"):
                        _copy_member(outer, whole, in_path, info, outer_out)
                        continue
                    inner_path = os.path.join(work_dir, "inner.zip")
                    results += _convert_inner(job, info.filename, inner_path)
                    with open(inner_path, "rb") as reader, \
                            outer_out.open(_copy_info(info), "w", force_zip64=True) as writer:
                        shutil.copyfileobj(reader, writer, length=1 << 20)
                    os.unlink(inner_path)
                except _READ_ERRORS as error:
                    raise DataError(f"{in_path}:{info.filename}: cannot read "
                                    f"({type(error).__name__}: {error})") from error
        if not any(stats.records for stats in results):
            raise DataError(f"{in_path} holds no records (no JSONL member of an inner ZIP has a record line); "
                            "nothing written")
        os.replace(partial, out_path)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return results
