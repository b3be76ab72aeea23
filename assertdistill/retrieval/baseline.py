"""The retrieval baseline of a run: an index over its training split, and a retriever per split under the leakage rules.

Leakage rules (docs/RETRIEVAL.md):
- a validation record never retrieves a training record from its own test file (repo + test_path);
- a training record (retrieval-augmented training) never retrieves itself, nor a record of its own test file.
A record that names no test file (an archive not made by make_dataset.py) is excluded from nothing by file:
its retrieval sees exactly the training records the student was trained on, no more and no less (a
training record still never retrieves itself, by its line). Identical (test method, assertion) pairs are
not removed: a validation test that duplicates a training test of another file is a real duplicate the
student may have learnt too, and retrieval returns its assertion.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..data.records import RecordError, ground_truth_of
from ..java.mining import MiningStats, mine_repos
from .index import Entry, IndexSettings, RetrievalIndex, RetrievalIndexError, test_file_of

TRAINING, VALIDATION = "training", "validation"  # which split a retriever serves
SEARCH_DEPTH = 1  # how many hits a retriever returns beyond the augmented inputs' K (the baseline needs one)


def training_entries(records: Iterable[tuple[int, object]], counts: Counter,
                     focal_identifiers: bool = False) -> Iterator[Entry]:
    """Entries of the usable training records of DistillationStream.iter_records; skipped ones counted by reason."""
    for line_number, record in records:
        if isinstance(record, RecordError):
            counts[f"skipped_{record.reason}"] += 1
            continue
        counts["indexed"] += 1
        test_file = test_file_of(record.location)
        if not test_file:
            counts["without_test_file"] += 1
        yield Entry(record.test_method, record.ground_truth_text, test_file, line_number,
                    record.focal_code if focal_identifiers else "")


def index_training_split(train_stream, require_teacher: bool,
                         settings: IndexSettings = IndexSettings()) -> tuple[RetrievalIndex, Counter]:
    """The index of a run's training records (the ones its student trains on), in one streaming pass, and counts."""
    counts: Counter = Counter()
    records = train_stream.iter_records(require_teacher)
    return RetrievalIndex.build(training_entries(records, counts, settings.focal_identifiers), settings), counts


def project_entries(roots: list[Path], exclude: Iterable[str] = ()) -> tuple[list[Entry], MiningStats]:
    """Entries of a user's Java project(s): their existing tests, mined as make_dataset.py mines them."""
    stats = MiningStats()
    entries, roots_by_name = [], [(root.name, root) for root in roots]
    for number, record in enumerate(mine_repos(roots_by_name, stats, exclude), 1):
        try:
            assertion = ground_truth_of(record)
        except RecordError:
            continue
        root = dict(roots_by_name)[record["repo"]]  # the test file's absolute path: what generate_assertions.py passes
        entries.append(Entry(record["test_method_masked"], assertion, str((root / record["test_path"]).resolve()),
                             number))
    return entries, stats


def dataset_retrievers(train_records: list[dict], examples: int) -> dict[str, object]:
    """make_teacher_logits.py's retrievers: {split: retriever(position, record dict)} over the training records it
    writes (as the student's run will index them), under the same leakage rules; a record's position is its entry."""
    entries = (Entry(record["test_method_masked"], ground_truth_of(record), test_file_of(record), position)
               for position, record in enumerate(train_records))
    index = RetrievalIndex.build(entries)

    def of(split: str):
        retriever = Retriever(index, split, examples)
        return lambda position, record: retriever.retrieve(
            record["test_method_masked"], test_file_of(record), line_number=position if split == TRAINING else None)

    return {TRAINING: of(TRAINING), VALIDATION: of(VALIDATION)}


class Retriever:
    """retriever(line_number, record) -> [(test method, assertion), ...] best first, under one split's leakage rules."""

    def __init__(self, index: RetrievalIndex, split: str, depth: int):
        if split not in (TRAINING, VALIDATION):
            raise ValueError(f"split must be {TRAINING} or {VALIDATION}, got {split!r}")
        self.index, self.split, self.depth = index, split, depth

    def excluded(self, line_number: int | None, test_file: str) -> np.ndarray | None:
        """The entry numbers a record may not retrieve: its own test file's, and itself when training."""
        parts = []
        same = self.index.same_file(test_file)
        if same is not None:
            parts.append(same)
        if self.split == TRAINING and line_number is not None:
            own = self.index.entry_at_line(line_number)
            if own is not None:
                parts.append(np.asarray([own]))
        return np.concatenate(parts) if parts else None

    def retrieve(self, test_method: str, test_file: str, focal_code: str = "",
                 line_number: int | None = None) -> list[tuple[str, str]]:
        """(test method, assertion) of the best entries for one test, never one of `test_file` (nor itself)."""
        focal = focal_code if self.index.settings.focal_identifiers else ""
        hits = self.index.search(test_method, self.depth, self.excluded(line_number, test_file), focal)
        return [(self.index.entries[hit].test_method, self.index.entries[hit].assertion) for hit in hits]

    def __call__(self, line_number: int, record) -> list[tuple[str, str]]:
        return self.retrieve(record.test_method, test_file_of(record.location), record.focal_code, line_number)


def describe_counts(index: RetrievalIndex, counts: Counter) -> str:
    """One line: what was indexed, what was skipped, how many records name no test file."""
    skipped = {key.removeprefix("skipped_"): value for key, value in counts.items() if key.startswith("skipped_")}
    text = f"Retrieval index: {len(index)} training records (BM25, {index.settings.tokenization} tokens)"
    if skipped:
        text += f", skipped {sum(skipped.values())} ({', '.join(f'{k}: {v}' for k, v in sorted(skipped.items()))})"
    if counts["without_test_file"]:
        text += (f"; {counts['without_test_file']} name no test file (repo/test_path): the by-file leakage rule "
                 "cannot apply to them")
    return text


def attach_retrievers(train_stream, val_stream, augment: int, require_teacher: bool) -> RetrievalIndex | None:
    """Index the training split (the records its student trains on) and give the streams their retrievers: the
    validation stream the baseline (and K examples), the training stream K examples when augment > 0.

    None, said in one line, when no training record can be indexed.
    """
    try:
        index, counts = index_training_split(train_stream, require_teacher)
    except RetrievalIndexError:
        print("Retrieval baseline: none, the archive has no usable training record to retrieve from")
        return None
    print(describe_counts(index, counts))
    val_stream.retriever = Retriever(index, VALIDATION, max(augment, SEARCH_DEPTH))
    if augment > 0:
        train_stream.retriever = Retriever(index, TRAINING, augment)
    return index
