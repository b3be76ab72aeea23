"""Stream distillation records from nested ZIPs as padded-to-longest batches (an IterableDataset)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .archive import (DEFAULT_MAX_RECORD_BYTES, DataError, InnerZipLocation, is_header_line, iter_jsonl_lines,
                      join_pieces, locate_inner_zip, prefetched)
from .codec import CodecError, QuantizedLogits, decode_quantized
from .loss import IGNORE_INDEX
from .records import DataStats, InputEncoder, RecordError, parse_record



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


def _iter_lines(location: InnerZipLocation, spec: ArchiveSpec) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of every non-empty line of the spec's JSONL member."""
    return iter_jsonl_lines(location, spec.jsonl_name, spec.gzipped, spec.label,
                            max_record_bytes=spec.max_record_bytes)


def _prefetched_lines(location: InnerZipLocation, spec: ArchiveSpec) -> Iterator[tuple[int, bytes]]:
    """_iter_lines, inflated ahead by a reader thread (lines joined here, in the parsing thread)."""
    for line_number, pieces in prefetched(iter_jsonl_lines(location, spec.jsonl_name, spec.gzipped, spec.label,
                                                            joined=False, max_record_bytes=spec.max_record_bytes)):
        yield line_number, join_pieces(pieces)


def count_records(location: InnerZipLocation, spec: ArchiveSpec) -> tuple[int, dict | None]:
    """Number of records (header item_count when present, else non-empty lines), and the header."""
    header = None
    count = 0
    for index, (_, line) in enumerate(_iter_lines(location, spec)):
        if index == 0:
            header = is_header_line(line)
            if header is not None:
                item_count = header.get("item_count")
                if isinstance(item_count, int) and item_count >= 0:
                    return item_count, header
                continue
        count += 1
    return count, header


def teacher_rows_for(sample: Sample) -> np.ndarray | None:
    """Teacher values (N, V) at the sample's label positions that the teacher block covers."""
    if sample.teacher is None:
        return None
    covered = min(sample.teacher.values.shape[0], len(sample.labels))
    keep = np.asarray(sample.labels[:covered]) != IGNORE_INDEX
    return sample.teacher.values[:covered][keep]


def collate(samples: list[Sample], pad_token_id: int) -> dict:
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

    batch = {
        "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
        "ground_truth_texts": [sample.ground_truth_text for sample in samples],
        "teacher_texts": [sample.teacher_text for sample in samples],
        "teacher_texts_script1": [sample.teacher_text_script1 for sample in samples],
        "line_numbers": [sample.line_number for sample in samples],
        "teacher_values": None, "teacher_scale": None, "teacher_zero_point": None,
        "teacher_position_mask": teacher_position_mask,
    }
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
    """Yields collated batches from one archive, then one DataStats per worker at the end of a pass."""

    def __init__(self, spec: ArchiveSpec, encoder: InputEncoder, batch_size: int, need_logits: bool,
                 focal_field: str = "focal_file", shuffle_buffer_size: int = 0, seed: int = 42,
                 strict: bool = False, rank: int = 0, world_size: int = 1, max_records: int | None = None,
                 shard_by_batch: bool = False):
        super().__init__()
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
        self.location = locate_inner_zip(spec.outer_path, spec.inner_zip_path)
        try:
            self.num_records, self.header = count_records(self.location, spec)
        except DataError:  # a damaged member: do not leave its spilled copy behind
            self.close()
            raise
        self.max_records = max_records
        # Evaluation shards whole batches of the single-process batch sequence, so that distributed
        # metrics equal single-process ones; every shard then reads (and counts) every record.
        self.shard_by_batch = shard_by_batch
        if max_records is not None:
            self.num_records = min(self.num_records, max_records)

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

    def _encode(self, line_number: int, line: bytes) -> Sample:
        record = parse_record(line, self.focal_field, self.need_logits, lazy_hex=True)
        labels = self.encoder.encode_target(record.ground_truth_text)
        pad_id = self.encoder.tokenizer.pad_token_id
        labels = [IGNORE_INDEX if token == pad_id else token for token in labels]
        teacher = None
        if record.compressed_logits is not None:
            try:
                teacher = decode_quantized(record.compressed_logits, max_positions=len(labels))
            except CodecError as error:
                raise RecordError("bad_compressed_logits", str(error)) from None
        input_ids = self.encoder.encode_source(record.focal_code, record.test_method)
        return Sample(input_ids, labels, teacher, record.ground_truth_text, record.teacher_text,
                      record.teacher_text_script1, line_number)

    def iter_samples(self, stats: DataStats) -> Iterator[Sample]:
        """Encoded samples of this worker's shard, in file order; bad records counted in stats."""
        shard, num_shards = self._shard()
        record_index = -1
        for position, (line_number, line) in enumerate(_prefetched_lines(self.location, self.spec)):
            if position == 0 and is_header_line(line) is not None:
                continue
            record_index += 1
            if self.max_records is not None and record_index >= self.max_records:
                return
            if not self.shard_by_batch and record_index % num_shards != shard:
                continue
            try:
                sample, line = self._encode(line_number, line), None  # the sample holds what it needs
            except RecordError as error:
                if self.strict:
                    raise DataError(f"{self.spec.label}/{self.spec.jsonl_name} line {line_number}: "
                                    f"{error} (--strict_data)") from None
                stats.skipped[error.reason] += 1
                continue
            if sample.teacher is not None and sample.teacher.values.shape[0] < len(sample.labels):
                stats.notes["teacher_shorter_than_target"] += 1
            stats.used += 1
            yield sample

    def _shuffled(self, samples: Iterator[Sample]) -> Iterator[Sample]:
        if self.shuffle_buffer_size <= 1:
            yield from samples
            return
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
        stats = DataStats()
        pending: list[Sample] = []
        pad_id = self.encoder.tokenizer.pad_token_id
        shard, num_shards = self._shard() if self.shard_by_batch else (0, 1)
        batch_index = 0
        for sample in self._shuffled(self.iter_samples(stats)):
            pending.append(sample)
            if len(pending) == self.batch_size:
                if batch_index % num_shards == shard:
                    batch, pending = collate(pending, pad_id), []  # samples freed while the batch is in use
                    batch["batch_index"] = batch_index
                    yield batch
                pending = []
                batch_index += 1
        if pending and batch_index % num_shards == shard:
            batch = collate(pending, pad_id)
            batch["batch_index"] = batch_index
            yield batch
        yield stats
