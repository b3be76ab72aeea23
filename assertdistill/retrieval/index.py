"""A BM25 index (bm25s) over training test methods, with the assertion each returns; built in one pass, saved, loaded.

Each entry is one training record: its test method with the placeholder (the query side of the task), its
ground-truth assertion (what retrieval returns), the test file it came from (repo + test_path, for the
leakage rules) and its line in the training file. Only token ids are kept while building (no JSON record,
no logits): memory grows with the corpus's text, not with the archive.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import bm25s
import numpy as np

from .code_tokens import DEFAULT_TOKENIZATION, code_tokens

ENTRIES_FILENAME = "entries.jsonl"  # one Entry per line, in index order
SETTINGS_FILENAME = "retrieval_settings.json"  # IndexSettings
BM25_DIRNAME = "bm25"  # bm25s's own files
K1, B = 1.5, 0.75  # BM25's term-frequency saturation and length normalisation (bm25s's and Lucene's defaults)


class RetrievalIndexError(ValueError):
    """A retrieval index that cannot be built or read, with the reason."""


@dataclass(frozen=True)
class Entry:
    """One indexed training record."""

    test_method: str  # test_method_masked: the test with its assertion placeholder
    assertion: str  # the ground truth the record's test held
    test_file: str  # "<repo>/<test_path>" ("" when the record does not say): the leakage rules' unit
    line_number: int  # in the training JSONL (0 when built from a project)
    focal_code: str = ""  # only when the index was built with focal identifiers


@dataclass(frozen=True)
class IndexSettings:
    """How an index tokenizes: saved with it, so a query is tokenized as its documents were."""

    tokenization: str = DEFAULT_TOKENIZATION
    focal_identifiers: bool = False  # documents also hold the focal code's identifiers
    k1: float = K1
    b: float = B


def test_file_of(location: dict) -> str:
    """'<repo>/<test_path>' of a record's location, '' when it has no test_path."""
    path = location.get("test_path") or ""
    return f"{location.get('repo') or ''}/{path}" if path else ""


def document_tokens(settings: IndexSettings, test_method: str, focal_code: str = "") -> list[str]:
    """The tokens of one document or query: its test method's, plus its focal code's identifiers when so set."""
    tokens = code_tokens(test_method, settings.tokenization)
    if settings.focal_identifiers and focal_code:
        tokens += code_tokens(focal_code, settings.tokenization)
    return tokens


class RetrievalIndex:
    """BM25 over entries' test methods; search() gives entry numbers best first (ties: lower number first)."""

    def __init__(self, bm25: bm25s.BM25, vocabulary: dict[str, int], entries: list[Entry], settings: IndexSettings):
        self.bm25, self.vocabulary, self.entries, self.settings = bm25, vocabulary, entries, settings
        self._by_file: dict[str, np.ndarray] = {}
        files: dict[str, list[int]] = {}
        for number, entry in enumerate(entries):
            if entry.test_file:
                files.setdefault(entry.test_file, []).append(number)
        self._by_file = {name: np.asarray(numbers) for name, numbers in files.items()}
        self._by_line = {entry.line_number: number for number, entry in enumerate(entries)}

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def build(cls, entries: Iterable[Entry], settings: IndexSettings = IndexSettings()) -> RetrievalIndex:
        """Tokenize the entries as they stream in (token ids only), then index them."""
        vocabulary: dict[str, int] = {}
        kept, corpus = [], []
        for entry in entries:
            tokens = document_tokens(settings, entry.test_method, entry.focal_code)
            corpus.append([vocabulary.setdefault(token, len(vocabulary)) for token in tokens])
            kept.append(Entry(entry.test_method, entry.assertion, entry.test_file, entry.line_number))
        if not kept:
            raise RetrievalIndexError("no training record to index")
        bm25 = bm25s.BM25(k1=settings.k1, b=settings.b)
        bm25.index((corpus, vocabulary), show_progress=False)
        return cls(bm25, vocabulary, kept, settings)

    def scores(self, test_method: str, focal_code: str = "") -> np.ndarray:
        """(N,) BM25 score of every entry for one query."""
        ids = [self.vocabulary[t] for t in document_tokens(self.settings, test_method, focal_code)
               if t in self.vocabulary]
        if not ids:
            return np.zeros(len(self.entries), dtype=np.float32)
        return self.bm25.get_scores_from_ids(ids)

    def search(self, test_method: str, k: int, excluded: np.ndarray | None = None, focal_code: str = "") -> list[int]:
        """The k best entry numbers with a positive score, best first, ties broken by entry number; `excluded`
        entry numbers are never returned."""
        scores = np.asarray(self.scores(test_method, focal_code), dtype=np.float64)
        if excluded is not None and len(excluded):
            scores[excluded] = -np.inf
        positive = np.flatnonzero(scores > 0)
        if len(positive) > k:  # keep every entry tied with the k-th best, then order them exactly
            threshold = np.partition(scores[positive], len(positive) - k)[len(positive) - k]
            positive = positive[scores[positive] >= threshold]
        order = np.lexsort((positive, -scores[positive]))
        return [int(number) for number in positive[order][:k]]

    def same_file(self, test_file: str) -> np.ndarray | None:
        """The entry numbers from one test file (None when the file is unknown or not indexed)."""
        return self._by_file.get(test_file) if test_file else None

    def entry_at_line(self, line_number: int) -> int | None:
        """The entry number of the training record on that line (None: not indexed)."""
        return self._by_line.get(line_number)

    def save(self, directory: str) -> None:
        """The index, its settings and its entries into `directory` (created)."""
        os.makedirs(directory, exist_ok=True)
        self.bm25.save(os.path.join(directory, BM25_DIRNAME), show_progress=False)
        with open(os.path.join(directory, SETTINGS_FILENAME), "w", encoding="utf-8") as f:
            json.dump(asdict(self.settings), f, indent=2)
        with open(os.path.join(directory, ENTRIES_FILENAME), "w", encoding="utf-8") as f:
            for entry in self.entries:
                f.write(json.dumps(asdict(entry)) + "\n")

    @classmethod
    def load(cls, directory: str) -> RetrievalIndex:
        """An index save() wrote; RetrievalIndexError naming what is missing or unreadable."""
        try:
            with open(os.path.join(directory, SETTINGS_FILENAME), encoding="utf-8") as f:
                settings = IndexSettings(**json.load(f))
            entries = list(_read_entries(os.path.join(directory, ENTRIES_FILENAME)))
            bm25 = bm25s.BM25.load(os.path.join(directory, BM25_DIRNAME), show_progress=False, verbosity=0)
        except (OSError, ValueError, TypeError) as error:
            raise RetrievalIndexError(f"{directory} is not a readable retrieval index ({error})") from error
        return cls(bm25, bm25.vocab_dict, entries, settings)


def _read_entries(path: str) -> Iterator[Entry]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield Entry(**json.loads(line))
