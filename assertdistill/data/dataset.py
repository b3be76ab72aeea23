"""Stream distillation records from nested ZIPs as padded-to-longest batches (an IterableDataset)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..codec.codec import QuantizedLogits, decode_quantized
from ..codec.hexframes import CodecError
from ..core.constants import IGNORE_INDEX
from .archive import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_HEADER_LINE_BYTES,
    STREAM_ERRORS,
    DataError,
    InnerZipLocation,
    OversizeLine,
    is_header_line,
    iter_jsonl_lines,
    join_pieces,
    locate_inner_zip,
    open_jsonl_member,
    prefetched,
)
from .batch import Batch
from .datastats import DataStats
from .encoding import InputEncoder
from .records import Record, RecordError, parse_record


@dataclass
class ArchiveSpec:
    """One data file: outer ZIP, inner ZIP member, JSONL member, gzip flag, longest line read (bytes)."""

    outer_path: str
    inner_zip_path: str
    jsonl_name: str
    gzipped: bool = False
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    @property
    def label(self) -> str:
        return f"{self.outer_path}:{self.inner_zip_path}"


@dataclass
class Sample:
    """One encoded record, unpadded."""

    input_ids: list[int]
    labels: list[int]
    teacher: QuantizedLogits | None
    ground_truth_text: str
    teacher_text: str
    teacher_text_script1: str
    line_number: int
    teacher_labels: list[int] | None = None  # the teacher's text tokenized as the target (--teacher_text_weight)
    location: dict[str, str] = field(default_factory=dict)  # where the test is: the ROW_LOCATION_KEYS it has
    retrieved_text: str | None = None  # the retrieval baseline's assertion (None: the run has no retriever)


COUNT_CHUNK_BYTES = 1 << 23  # inflated bytes scanned at a time when counting records
_PEEK_BYTES = 64  # a line's first bytes, enough to tell a record from a blank line


def _has_content(segment: memoryview) -> bool:
    """True when a piece of a line holds a non-whitespace byte (a blank-looking start is checked in full)."""
    return bool(bytes(segment[:_PEEK_BYTES]).strip()) or (len(segment) > _PEEK_BYTES and bool(bytes(segment).strip()))


class _RecordCounter:
    """Counts non-blank lines, and the records among them (all but a header first line), from raw chunks."""

    def __init__(self):
        self.records = 0
        self.header: dict | None = None
        self._lines = 0  # non-blank lines finished so far
        self._in_content = False  # the current line has a non-whitespace byte
        self._first_line: list[bytes] = []  # the first non-blank line, while it may still be a header
        self._first_size = 0

    def feed(self, chunk: bytes) -> None:
        """Count the lines that end in `chunk` (a line may span chunks)."""
        view, start = memoryview(chunk), 0
        while True:
            end = chunk.find(b"\n", start)
            segment = view[start: len(chunk) if end < 0 else end]
            if not self._in_content and len(segment) and _has_content(segment):
                self._in_content = True
            if self._lines == 0 and self._first_size <= MAX_HEADER_LINE_BYTES:
                self._first_line.append(bytes(segment[: MAX_HEADER_LINE_BYTES + 1 - self._first_size]))
                self._first_size += len(self._first_line[-1])
            if end < 0:
                return
            self.end_line()
            start = end + 1

    def end_line(self) -> None:
        """Close the current line (at a newline, or at the end of the member)."""
        if self._in_content:
            self._lines += 1
            if self._lines == 1 and self._first_size <= MAX_HEADER_LINE_BYTES:
                self.header = is_header_line(b"".join(self._first_line))
            self._first_line = []
            if self._lines > 1 or self.header is None:
                self.records += 1
        if self._lines == 0:
            self._first_line, self._first_size = [], 0  # a blank line: the first line is still to come
        self._in_content = False


def count_records(location: InnerZipLocation, spec: ArchiveSpec,
                  stop_after: int | None = None) -> tuple[int, dict | None, bool]:
    """(records, header, complete): the member's non-blank lines but a header line, counted without parsing.

    The inflated member is scanned for newlines in chunks (no line is joined or parsed). With stop_after,
    counting stops once more records than that were seen (complete is then False).
    """
    counter = _RecordCounter()
    with open_jsonl_member(location, spec.jsonl_name, spec.gzipped, spec.label) as stream:
        while True:
            try:
                chunk = stream.read1(COUNT_CHUNK_BYTES)
            except STREAM_ERRORS as error:
                raise DataError(f"{spec.label}/{spec.jsonl_name}: archive is truncated or corrupt while "
                                f"counting records ({type(error).__name__}: {error})") from error
            if not chunk:
                counter.end_line()
                return counter.records, counter.header, True
            counter.feed(chunk)
            if stop_after is not None and counter.records > stop_after:
                return counter.records, counter.header, False


def header_count_note(header: dict | None, records: int, complete: bool, where: str) -> str | None:
    """One line when the header's item_count disagrees with the records counted; None when it agrees or is absent."""
    item_count = header.get("item_count") if header is not None else None
    if not isinstance(item_count, int) or isinstance(item_count, bool):
        return None
    if complete and item_count != records:
        return (f"Note: {where}: the header's item_count is {item_count} but the file holds {records} records; "
                f"using {records}")
    if not complete and item_count < records:
        return (f"Note: {where}: the header's item_count is {item_count} but the file holds at least "
                f"{records} records")
    return None


def teacher_rows_for(sample: Sample) -> np.ndarray | None:
    """Teacher values (N, V) at the sample's label positions that the teacher block covers."""
    if sample.teacher is None:
        return None
    covered = min(sample.teacher.values.shape[0], len(sample.labels))
    keep = np.asarray(sample.labels[:covered]) != IGNORE_INDEX
    return sample.teacher.values[:covered][keep]


def collate(samples: list[Sample], pad_token_id: int) -> Batch:
    """Pad sources and targets to the longest in the batch; gather teacher rows at label positions only."""
    batch_size = len(samples)
    source_length = max(len(sample.input_ids) for sample in samples)
    target_length = max(len(sample.labels) for sample in samples)
    input_ids = torch.full((batch_size, source_length), pad_token_id, dtype=torch.long)  # (B, S)
    attention_mask = torch.zeros((batch_size, source_length), dtype=torch.long)  # (B, S)
    labels = torch.full((batch_size, target_length), IGNORE_INDEX, dtype=torch.long)  # (B, L)
    teacher_position_mask = torch.zeros((batch_size, target_length), dtype=torch.bool)  # (B, L)
    rows, scales, zero_points = [], [], []
    for index, sample in enumerate(samples):
        input_ids[index, : len(sample.input_ids)] = torch.tensor(sample.input_ids)
        attention_mask[index, : len(sample.input_ids)] = 1
        labels[index, : len(sample.labels)] = torch.tensor(sample.labels)
        sample_rows = teacher_rows_for(sample)
        if sample_rows is None:
            continue
        covered = min(sample.teacher.values.shape[0], len(sample.labels))
        teacher_position_mask[index, :covered] = labels[index, :covered] != IGNORE_INDEX
        rows.append(sample_rows)
        scales.append(np.full(len(sample_rows), sample.teacher.scale, dtype=np.float32))
        zero_points.append(np.full(len(sample_rows), sample.teacher.zero_point, dtype=np.float32))

    batch: Batch = {
        "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
        "ground_truth_texts": [sample.ground_truth_text for sample in samples],
        "teacher_texts": [sample.teacher_text for sample in samples],
        "teacher_texts_script1": [sample.teacher_text_script1 for sample in samples],
        "line_numbers": [sample.line_number for sample in samples],
        "locations": [sample.location for sample in samples],
        "retrieved_texts": [sample.retrieved_text for sample in samples],
        "teacher_values": None, "teacher_scale": None, "teacher_zero_point": None,
        "teacher_position_mask": teacher_position_mask,
    }
    if any(sample.teacher_labels is not None for sample in samples):
        text_length = max(1, max(len(sample.teacher_labels or ()) for sample in samples))
        teacher_labels = torch.full((batch_size, text_length), IGNORE_INDEX, dtype=torch.long)  # (B, Lt)
        for index, sample in enumerate(samples):
            if sample.teacher_labels:
                teacher_labels[index, : len(sample.teacher_labels)] = torch.tensor(sample.teacher_labels)
        batch["teacher_labels"] = teacher_labels
    if rows:
        if len(rows) != batch_size:
            raise DataError("a batch mixes records with and without teacher logits")
        vocab = min(block.shape[1] for block in rows)
        dtypes = {block.dtype for block in rows}
        if len(dtypes) > 1:  # mixed bit depths: dequantize here, rarely happens
            rows = [(block[:, :vocab].astype(np.float32) - zero[:, None]) * scale[:, None]
                    for block, scale, zero in zip(rows, scales, zero_points)]
            scales = [np.ones_like(scale) for scale in scales]
            zero_points = [np.zeros_like(zero) for zero in zero_points]
        batch["teacher_values"] = torch.from_numpy(np.concatenate([block[:, :vocab] for block in rows]))  # (N, V)
        batch["teacher_scale"] = torch.from_numpy(np.concatenate(scales))  # (N,)
        batch["teacher_zero_point"] = torch.from_numpy(np.concatenate(zero_points))  # (N,)
    return batch


class DistillationStream(IterableDataset):
    """Yields collated batches from one archive, and DataStats items that add up to one pass's counts.

    Records are dealt out in groups of batch_size consecutive records: group g belongs to shard
    g mod (ranks x workers) and becomes one batch of its usable records. Each shard parses only its own
    records, and batches are the same for any number of workers and ranks; the DataLoader's round-robin
    over workers gives them back in file order (a group with no usable record yields its DataStats in
    its batch's place, so the order holds). With a shuffle buffer, a shard's records are shuffled and
    batched in the order they come out.
    """

    def __init__(self, spec: ArchiveSpec, encoder: InputEncoder, batch_size: int, need_logits: bool,
                 focal_field: str = "focal_file", shuffle_buffer_size: int = 0, seed: int = 42,
                 strict: bool = False, rank: int = 0, world_size: int = 1, max_records: int | None = None,
                 require_teacher: bool = True, teacher_text_targets: bool = False, retriever=None):
        super().__init__()
        # retriever(line_number, record) -> [(test method, assertion), ...] best first (retrieval/baseline.py),
        # or None: the first is the retrieval baseline, the first encoder.examples go into the input
        self.retriever = retriever
        self.require_teacher = require_teacher
        self.teacher_text_targets = teacher_text_targets  # also encode the teacher's text as a target
        self.spec = spec
        self.encoder = encoder
        self.batch_size = batch_size
        self.need_logits = need_logits
        self.focal_field = focal_field
        self.shuffle_buffer_size = shuffle_buffer_size
        self.seed = seed
        self.strict = strict
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.max_records = max_records
        self.location = locate_inner_zip(spec.outer_path, spec.inner_zip_path)
        # The records are counted in the data; the header's item_count is only checked against them.
        try:
            counted, self.header, complete = count_records(self.location, spec, stop_after=max_records)
        except DataError:  # a damaged member: do not leave its spilled copy behind
            self.close()
            raise
        self.num_records = counted if max_records is None else min(counted, max_records)
        self.count_note = header_count_note(self.header, counted, complete, f"{spec.label}/{spec.jsonl_name}")
        if self.count_note:
            print(self.count_note)

    def __len__(self) -> int:
        return self.num_records

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle buffer for a new epoch."""
        self.epoch = epoch

    def close(self) -> None:
        """Remove the spilled copy of the inner ZIP, if one was made."""
        if self.location.spilled and os.path.exists(self.location.path):
            os.unlink(self.location.path)

    def _shard(self) -> tuple[int, int]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        return self.rank * workers + worker_id, self.world_size * workers

    def _encode(self, line_number: int, line: bytes, stats: DataStats) -> Sample:
        record = parse_record(line, self.focal_field, self.need_logits, lazy_hex=True,
                              require_teacher=self.require_teacher)
        stats.notes.update(record.notes)
        labels = self._target_labels(record.ground_truth_text)
        teacher_labels = None
        if self.teacher_text_targets:  # no teacher text (--allow_records_without_teacher): no position counts
            teacher_labels = self._target_labels(record.teacher_text) if record.teacher_text else []
        teacher = None
        if record.compressed_logits is not None:
            try:
                teacher = decode_quantized(record.compressed_logits, max_positions=len(labels))
            except CodecError as error:
                raise RecordError("bad_compressed_logits", str(error)) from None
            if teacher.rows > 1:  # a batch dimension > 1: the thesis's loader kept its first row, so do we
                stats.notes["teacher_batch_rows_first_kept"] += 1
            for key in teacher.notes:  # a hint (size, format, ...) that disagrees with the data: used anyway
                stats.notes[f"compressed_logits_hint_{key}"] += 1
        retrieved, retrieved_text = (), None
        if self.retriever is not None:
            retrieved = self.retriever(line_number, record)
            retrieved_text = retrieved[0][1] if retrieved else ""  # nothing left to retrieve: an empty prediction
        input_ids = self.encoder.encode_source(record.focal_code, record.test_method, retrieved)
        return Sample(input_ids, labels, teacher, record.ground_truth_text, record.teacher_text,
                      record.teacher_text_script1, line_number, teacher_labels, record.location, retrieved_text)

    def _target_labels(self, text: str) -> list[int]:
        """A text's target ids, padding ids as IGNORE_INDEX."""
        pad_id = self.encoder.tokenizer.pad_token_id
        return [IGNORE_INDEX if token == pad_id else token for token in self.encoder.encode_target(text)]

    def _owned_lines(self) -> Iterator[tuple[int, int, bytes]]:
        """(group, line number, raw line) of this shard's records, in file order; other lines are never joined."""
        shard, num_shards = self._shard()
        return self._record_lines(lambda group: group % num_shards == shard)

    def iter_records(self, require_teacher: bool) -> Iterator[tuple[int, Record | RecordError]]:
        """(line number, Record without logits, or the RecordError that skips it) of every record, in file order,
        unsharded: one streaming pass (retrieval/baseline.py builds its index with it)."""
        for _, line_number, line in self._record_lines(lambda group: True):
            try:
                yield line_number, parse_record(line, self.focal_field, False, lazy_hex=True,
                                                require_teacher=require_teacher)
            except RecordError as error:
                yield line_number, error

    def _record_lines(self, owned) -> Iterator[tuple[int, int, bytes]]:
        """(group, line number, raw line) of the records whose group is owned(group), in file order."""
        lines = prefetched(iter_jsonl_lines(self.location, self.spec.jsonl_name, self.spec.gzipped,
                                            self.spec.label, joined=False,
                                            max_record_bytes=self.spec.max_record_bytes))
        record_index = -1
        try:
            for position, (line_number, pieces) in enumerate(lines):
                if position == 0 and not isinstance(pieces, OversizeLine) \
                        and sum(map(len, pieces)) <= MAX_HEADER_LINE_BYTES \
                        and is_header_line(join_pieces(pieces)) is not None:
                    continue
                record_index += 1
                if self.max_records is not None and record_index >= self.max_records:
                    return
                group = record_index // self.batch_size
                if owned(group):
                    yield group, line_number, join_pieces(pieces)
                pieces = None  # a record line is ~33 MB: let it go before the next one is read
        finally:
            lines.close()  # stops the reader thread

    def iter_groups(self) -> Iterator[tuple[int, list[Sample], DataStats]]:
        """(group index, usable samples, the group's counts) for each group of this shard, in file order."""
        group, samples, stats = None, [], DataStats()
        for line_group, line_number, line in self._owned_lines():
            if line_group != group:
                if group is not None:
                    yield group, samples, stats
                group, samples, stats = line_group, [], DataStats()
            try:
                sample, line = self._encode(line_number, line, stats), None  # the sample holds what it needs
            except RecordError as error:
                if self.strict:
                    raise DataError(f"{self.spec.label}/{self.spec.jsonl_name} line {line_number}: "
                                    f"{error} (--strict_data)") from None
                stats.skipped[error.reason] += 1
                continue
            if sample.teacher is not None and sample.teacher.values.shape[0] < len(sample.labels):
                stats.notes["teacher_shorter_than_target"] += 1
            stats.used += 1
            samples.append(sample)
        if group is not None:
            yield group, samples, stats

    def _shuffled(self, samples: Iterator[Sample]) -> Iterator[Sample]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch * 1009 + self._shard()[0])
        buffer: list[Sample] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer_size:
                buffer.append(sample)
                continue
            index = rng.randrange(len(buffer))
            yield buffer[index]
            buffer[index] = sample
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self):
        if self.shuffle_buffer_size > 1:
            yield from self._iter_shuffled()
            return
        pad_id = self.encoder.tokenizer.pad_token_id
        totals = DataStats()
        for group, samples, stats in self.iter_groups():
            totals.merge(stats)
            if not samples:  # keeps this worker's place in the DataLoader's round-robin
                yield totals
                totals = DataStats()
                continue
            batch = collate(samples, pad_id)
            samples = None  # freed while the batch is in use
            batch["batch_index"] = group
            yield batch
        yield totals

    def _iter_shuffled(self):
        """Batches of batch_size samples in the order the shuffle buffer gives them out, then the counts."""
        pad_id = self.encoder.tokenizer.pad_token_id
        totals = DataStats()

        def samples() -> Iterator[Sample]:
            for _, group_samples, stats in self.iter_groups():
                totals.merge(stats)
                yield from group_samples

        pending, batch_index = [], 0
        for sample in self._shuffled(samples()):
            pending.append(sample)
            if len(pending) == self.batch_size:
                batch, pending = collate(pending, pad_id), []
                batch["batch_index"] = batch_index
                batch_index += 1
                yield batch
        if pending:
            batch = collate(pending, pad_id)
            batch["batch_index"] = batch_index
            yield batch
        yield totals
