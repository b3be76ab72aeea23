"""Walk every JSONL member of a nested-ZIP archive and report what its records hold (compress.py inspect).

Per JSONL member: the header, how many records, bad records by reason (the trainer's reasons, plus
bad_compressed_logits for dicts the codec rejects), shapes, formats, bytes per record and the
quantization step. Records are streamed one line at a time; only a bounded sample is kept for medians.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from ..codec.codec import decode_quantized, decode_topk
from ..codec.hexframes import CodecError
from .archive import (
    DEFAULT_MAX_RECORD_BYTES,
    InnerZipLocation,
    OversizeLine,
    inner_location,
    is_header_line,
    iter_jsonl_lines,
    jsonl_members,
    list_inner_zips,
)
from .records import RecordError, parse_record

_MEDIAN_SAMPLE = 100_000  # values kept per distribution; medians are exact below this count


class Distribution:
    """Count, min, median, max and mean of a stream of numbers in bounded memory (a reservoir sample)."""

    def __init__(self):
        self.count, self.total = 0, 0.0
        self.low, self.high = float("inf"), float("-inf")
        self._sample: list[float] = []
        self._rng = random.Random(0)

    def add(self, value: float) -> None:
        """Record one value."""
        self.count += 1
        self.total += value
        self.low, self.high = min(self.low, value), max(self.high, value)
        if len(self._sample) < _MEDIAN_SAMPLE:
            self._sample.append(value)
        else:
            slot = self._rng.randrange(self.count)
            if slot < _MEDIAN_SAMPLE:
                self._sample[slot] = value

    def as_dict(self) -> dict | None:
        """{count, min, median, max, mean}, or None when nothing was recorded."""
        if not self.count:
            return None
        ordered = sorted(self._sample)
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        return {"count": self.count, "min": self.low, "median": median, "max": self.high,
                "mean": self.total / self.count}


@dataclass
class MemberReport:
    """What one JSONL member holds."""

    inner_zip: str
    member: str
    gzipped: bool
    header: dict | None = None
    records: int = 0  # record lines inspected
    decodable: int = 0
    bad: Counter = field(default_factory=Counter)
    bad_examples: dict = field(default_factory=dict)  # reason -> first "line N: message"
    formats: Counter = field(default_factory=Counter)  # "8-bit", "topk k=64", ...
    vocab_sizes: Counter = field(default_factory=Counter)
    hint_mismatches: Counter = field(default_factory=Counter)  # hint key -> decodable records it disagrees in
    positions: Distribution = field(default_factory=Distribution)  # T per record
    sizes: dict = field(default_factory=lambda: {name: Distribution() for name in SIZE_NAMES})
    steps: dict = field(default_factory=dict)  # "8-bit" -> Distribution of the scale s
    limit_reached: bool = False

    def as_dict(self) -> dict:
        """Plain-JSON form."""
        header = self.header or {}
        args = header.get("args") if isinstance(header.get("args"), dict) else {}
        sizes = {name: dist.as_dict() for name, dist in self.sizes.items()}
        float32, lz4, hex_size = (sizes[name]["mean"] if sizes[name] else None
                                  for name in ("float32_bytes", "lz4_bytes", "hex_bytes"))
        return {
            "inner_zip": self.inner_zip, "member": self.member, "gzipped": self.gzipped,
            "header": None if self.header is None else {
                "dataset_type": header.get("dataset_type"), "item_count": header.get("item_count"),
                "created_at": header.get("created_at"), "args.bits": args.get("bits")},
            "records_inspected": self.records, "records_decodable": self.decodable,
            "limit_reached": self.limit_reached,
            "bad_records": dict(sorted(self.bad.items())), "bad_examples": dict(sorted(self.bad_examples.items())),
            "formats": dict(sorted(self.formats.items())),
            "hint_mismatches": dict(sorted(self.hint_mismatches.items())),
            "vocab_sizes": {str(size): count for size, count in sorted(self.vocab_sizes.items())},
            "positions": self.positions.as_dict(),
            "bytes_per_record": sizes,
            "compression_ratio_vs_float32": {
                "lz4": float32 / lz4 if float32 and lz4 else None,
                "hex_as_stored": float32 / hex_size if float32 and hex_size else None},
            "quantization_step": {name: _with_bound(dist.as_dict()) for name, dist in sorted(self.steps.items())},
        }


SIZE_NAMES = ("line_bytes", "hex_bytes", "lz4_bytes", "decoded_bytes", "float32_bytes")


def _with_bound(step: dict) -> dict:
    """Add the worst-case rounding error s/2 (per value, in logits) to a step distribution."""
    step["max_abs_error_bound"] = {key: step[key] / 2 for key in ("min", "median", "max")}
    return step


def logits_summary(compressed: dict) -> tuple[str, list[int], dict, tuple[str, ...], float | None]:
    """Validate a compressed_logits dict by decoding it; (format name, [T, V], sizes in bytes, hint keys that
    disagree with the data, quantization step s or None)."""
    if compressed.get("format") == "topk":
        sparse = decode_topk(compressed)  # CodecError when malformed
        name = f"topk k={compressed['k']}"
        arrays = [compressed["data_encoded"][array] for array in ("values", "indices", "tail")]
        rows, positions, vocab = 1, sparse.num_positions, sparse.vocab_size
        decoded = sum(array["original_size"] for array in arrays)  # checked by decode_topk
        notes, step = (), None
    else:
        quantized = decode_quantized(compressed, all_rows=True)  # CodecError when malformed
        rows = quantized.rows
        name = f"{quantized.bits}-bit" + (f" ({rows} batch rows; training reads the first)" if rows > 1 else "")
        arrays = [compressed["data_encoded"]]
        positions, vocab = quantized.num_positions, quantized.values.shape[1]
        count = rows * positions * vocab
        packed = quantized.bits == 4 and quantized.values.size and bool(compressed.get("packed", False))
        decoded = (count + 1) // 2 if packed else count * quantized.values.itemsize
        notes, step = quantized.notes, (quantized.scale if quantized.bits in (4, 8) else None)
    hex_size = sum(len(array["data"]) for array in arrays)
    lz4_size = hex_size // 2 if all(array.get("encoding", "none") == "lz4" for array in arrays) else None
    sizes = {"hex_bytes": hex_size, "lz4_bytes": lz4_size, "decoded_bytes": decoded,
             "float32_bytes": rows * positions * vocab * 4}
    return name, [positions, vocab], sizes, notes, step


def inspect_member(location: InnerZipLocation, report: MemberReport, label: str, limit: int | None,
                   progress: bool, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
    """Fill `report` from the member's lines (at most `limit` records; longer lines than the bound are bad)."""
    bar = tqdm(desc=f"{report.member}", unit="record", leave=False, disable=not progress, dynamic_ncols=True)
    lines = iter_jsonl_lines(location, report.member, report.gzipped, label, max_record_bytes=max_record_bytes)
    try:
        for index, (line_number, line) in enumerate(lines):
            if index == 0:
                report.header = is_header_line(line)
                if report.header is not None:
                    item_count = report.header.get("item_count")
                    if isinstance(item_count, int) and item_count >= 0:
                        bar.total = item_count if limit is None else min(limit, item_count)
                    continue
            if limit is not None and report.records >= limit:
                report.limit_reached = True
                break
            report.records += 1
            bar.update(1)
            _inspect_record(line_number, line, report)
    finally:
        bar.close()


def _inspect_record(line_number: int, line: bytes | OversizeLine, report: MemberReport) -> None:
    report.sizes["line_bytes"].add(line.size if isinstance(line, OversizeLine) else len(line))
    try:
        record = parse_record(line, "focal_file", need_logits=True)
        name, (positions, vocab), sizes, notes, step = logits_summary(record.compressed_logits)
    except RecordError as error:
        _count_bad(report, error.reason, line_number, str(error))
        return
    except CodecError as error:
        _count_bad(report, "bad_compressed_logits", line_number, str(error))
        return
    report.decodable += 1
    report.formats[name] += 1
    report.vocab_sizes[vocab] += 1
    report.positions.add(positions)
    report.hint_mismatches.update(notes)
    for key, value in sizes.items():
        if value is not None:  # plain hex has no LZ4 frame
            report.sizes[key].add(value)
    if name in ("4-bit", "8-bit"):
        report.steps.setdefault(name, Distribution()).add(step)


def _count_bad(report: MemberReport, reason: str, line_number: int, message: str) -> None:
    report.bad[reason] += 1
    report.bad_examples.setdefault(reason, f"line {line_number}: {message}"[:300])


def inspect_archive(outer_path: str, inner_zips: list[str] | None = None, limit: int | None = None,
                    progress: bool = True, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> list[MemberReport]:
    """A MemberReport for every JSONL member of the chosen inner ZIPs (default: every *.zip member)."""
    reports = []
    for inner_zip in inner_zips or list_inner_zips(outer_path):
        label = f"{outer_path}:{inner_zip}"
        with inner_location(outer_path, inner_zip) as location:
            for name, gzipped in jsonl_members(location, label):
                report = MemberReport(inner_zip, name, gzipped)
                inspect_member(location, report, label, limit, progress, max_record_bytes)
                reports.append(report)
    return reports


def _number(value) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _spread(dist: dict | None, unit: str = "") -> str:
    if not dist:
        return "-"
    return (f"min {_number(dist['min'])}{unit} / median {_number(dist['median'])}{unit} / "
            f"max {_number(dist['max'])}{unit}")


def format_reports(outer_path: str, reports: list[MemberReport]) -> str:
    """Human-readable text of the reports."""
    lines = []
    for report in reports:
        data = report.as_dict()
        lines.append(f"{outer_path}:{report.inner_zip} / {report.member}" + (" (gzip)" if report.gzipped else ""))
        header = data["header"]
        lines.append("  header: " + ("none" if header is None else
                                     ", ".join(f"{key}={value}" for key, value in header.items())))
        limited = " (stopped at --limit)" if report.limit_reached else ""
        bad = sum(report.bad.values())
        lines.append(f"  records: {report.records} inspected{limited}, {report.decodable} decodable, {bad} bad")
        for reason, count in sorted(report.bad.items()):
            lines.append(f"    {reason}: {count} (first: {report.bad_examples[reason]})")
        count = header.get("item_count") if header else None
        if isinstance(count, int) and not report.limit_reached and count != report.records:
            lines.append(f"  note: header item_count {count} != {report.records} records in the file")
        lines.append("  formats: " + (", ".join(f"{name} x{n}" for name, n in data["formats"].items()) or "-"))
        if report.hint_mismatches:
            lines.append("  hints that disagree with the data (records decoded anyway): "
                         + ", ".join(f"{key} x{n}" for key, n in data["hint_mismatches"].items()))
        lines.append(f"  positions T: {_spread(data['positions'])}; vocab V: "
                     + (", ".join(f"{size} x{n}" for size, n in data["vocab_sizes"].items()) or "-"))
        sizes = data["bytes_per_record"]
        for key, title in (("hex_bytes", "hex as stored"), ("lz4_bytes", "LZ4 frames"),
                           ("decoded_bytes", "decoded"), ("float32_bytes", "as float32")):
            if sizes[key]:
                lines.append(f"  bytes/record, {title}: mean {_number(sizes[key]['mean'])} ({_spread(sizes[key])})")
        ratios = data["compression_ratio_vs_float32"]
        if ratios["lz4"]:
            lines.append(f"  compression vs float32: {ratios['lz4']:.1f}x as LZ4 bytes, "
                         f"{ratios['hex_as_stored']:.1f}x as hex text")
        for name, step in data["quantization_step"].items():
            lines.append(f"  {name} step s (one per record): {_spread(step)}; "
                         f"max |error| <= s/2: {_spread(step['max_abs_error_bound'])} (logits)")
    return "\n".join(lines)
