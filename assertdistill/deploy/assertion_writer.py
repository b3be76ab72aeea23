"""generate_assertions.py's work: files -> model inputs -> the student's assertions -> diff, JSON or rewritten files."""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.schema import RETRIEVAL_INDEX_DIRNAME
from ..data.encoding import InputEncoder
from ..java.mining import PLACEHOLDER, is_test_path
from ..java.placeholders import (
    FocalFinder,
    JavaInputError,
    JavaTestFile,
    find_placeholders,
    infer_source_root,
    mask_existing_assertions,
    place_assertions,
    rewrite,
    split_assertions,
)
from ..model.generation import generate
from ..retrieval.baseline import VALIDATION, Retriever
from ..retrieval.index import RetrievalIndex, RetrievalIndexError
from .saved_student import SavedStudent, SavedStudentError

TEST_NAME_ENDINGS = ("Test.java", "Tests.java", "TestCase.java", "IT.java")


@dataclass
class Written:
    """One placeholder's result (the --json object)."""

    file: str
    method: str
    line: int  # 1-based line of the placeholder in the file the placeholders are in (masked, with --mask_existing)
    assertion: str  # the lines written there, joined with newlines ("" when the student wrote none for it)
    latency_ms: float  # the method's encoding + generation time (one generation per method)

    def as_dict(self) -> dict:
        """The JSON object."""
        return {"file": self.file, "method": self.method, "line": self.line, "assertion": self.assertion,
                "latency_ms": round(self.latency_ms, 3)}


@dataclass
class FileResult:
    """A processed file: its text before and after, each placeholder's result, methods without focal class."""

    path: str
    original: str
    updated: str
    written: list[Written]
    without_focal: int
    outside_methods: int


def collect_files(paths: list[str], mask_existing: bool) -> tuple[list[str], list[str]]:
    """(Java files to process, one error line per PATH that gives none).

    A file is taken as given; a directory contributes its .java files holding a placeholder, or with
    mask_existing its test files (below a test/tests directory or named *Test, *Tests, *TestCase, *IT).
    """
    files, errors = [], []
    for path in paths:
        if os.path.isfile(path):
            files.append(path)
            continue
        if not os.path.isdir(path):
            errors.append(f"{path}: no such file or directory")
            continue
        found = []
        for candidate in sorted(Path(path).rglob("*.java")):
            relative = candidate.relative_to(path).as_posix()
            if mask_existing:
                if is_test_path(relative) or candidate.name.endswith(TEST_NAME_ENDINGS):
                    found.append(str(candidate))
            elif PLACEHOLDER in candidate.read_text(encoding="utf-8", errors="replace"):
                found.append(str(candidate))
        if not found:
            what = "test file" if mask_existing else f"'{PLACEHOLDER}' line in a .java file"
            errors.append(f"{path}: no {what} below this directory")
        files += found
    return files, errors


def read_source(path: str) -> tuple[str, str]:
    """(text with \\n newlines, the file's newline) of a .java file; JavaInputError for other files."""
    if not path.endswith(".java"):
        raise JavaInputError(f"{path}: not a Java file (.java)")
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise JavaInputError(f"{path}: not UTF-8 text") from None
    newline = "\r\n" if "\r\n" in text else "\n"
    return text.replace("\r\n", "\n"), newline


def retriever_for(student: SavedStudent, model_dir: str, index_dir: str | None) -> Retriever | None:
    """The retriever a student trained with --retrieval_augment K needs: --retrieval_index DIR, else its run's
    retrieval_index/ beside the model directory; None for a student trained without (K = 0).

    SavedStudentError when a K > 0 student has no index to read.
    """
    examples = int(student.setting("retrieval_augment", 0))
    if examples == 0:
        return None
    index_dir = index_dir or os.path.join(os.path.dirname(os.path.abspath(model_dir)), RETRIEVAL_INDEX_DIRNAME)
    try:
        return Retriever(RetrievalIndex.load(index_dir), VALIDATION, examples)
    except RetrievalIndexError as error:
        raise SavedStudentError(f"the student was trained with --retrieval_augment {examples} and needs a retrieval "
                                f"index: {error}; give --retrieval_index DIR (its run's {RETRIEVAL_INDEX_DIRNAME}/, or "
                                "one built from your tests: python -m assertdistill.retrieval.project_index)") from None


class AssertionWriter:
    """Holds the student, its input encoder and the focal-class finder across files."""

    def __init__(self, student: SavedStudent, num_beams: int, source_root: str | None = None, retriever=None):
        self.student = student
        self.retriever = retriever  # retrieval.baseline.Retriever for a student trained with --retrieval_augment
        self.num_beams = num_beams
        self.source_root = source_root
        self.max_length = int(student.setting("student_max_tgt_length", 512))
        self.encoder = InputEncoder(student.tokenizer, int(student.setting("student_max_src_length", 1024)),
                                    self.max_length, int(student.setting("retrieval_augment", 0)))
        self.focal = FocalFinder()

    @torch.no_grad()
    def generate_text(self, focal_code: str, test_method: str, test_file: str = "") -> tuple[str, float]:
        """(the student's output text, milliseconds) for one method's input, as evaluation generates it
        (with the retrieved examples of its retriever, which never returns a test of the same file)."""
        started = time.perf_counter()
        retrieved = ()
        if self.retriever is not None and self.encoder.examples:
            retrieved = self.retriever.retrieve(test_method, test_file, focal_code)
        input_ids = torch.tensor([self.encoder.encode_source(focal_code, test_method, retrieved)])  # (1, S)
        attention_mask = torch.ones_like(input_ids)
        model = self.student.model
        ids = generate(model, input_ids, attention_mask, self.num_beams, self.max_length)  # (1, L)
        text = self.student.tokenizer.decode(ids[0], skip_special_tokens=True)
        return text, (time.perf_counter() - started) * 1000

    def process(self, path: str, mask_existing: bool = False) -> FileResult:
        """Fill every placeholder of one file; JavaInputError for a file that cannot be used."""
        original, _ = read_source(path)
        text = mask_existing_assertions(path, original) if mask_existing else original
        test_file: JavaTestFile = find_placeholders(path, text)
        self.focal.attach(test_file, self.source_root or infer_source_root(path))
        replacements, indents, written = {}, {}, []
        for site in test_file.sites:
            output, milliseconds = self.generate_text(site.focal_code, site.test_method_masked,
                                                      str(Path(path).resolve()))
            for row, indent, lines in zip(site.lines, site.indents,
                                          place_assertions(site, split_assertions(output))):
                replacements[row], indents[row] = lines, indent
                written.append(Written(path, site.name, row + 1, "\n".join(lines), milliseconds))
        return FileResult(path, original, rewrite(text, replacements, indents), written,
                          sum(1 for site in test_file.sites if site.focal_path is None), test_file.outside_methods)


def unified_diff(result: FileResult) -> str:
    """The file's change as a unified diff (a/ and b/ prefixes, as git prints them; `patch -p1` applies it)."""
    name = result.path.lstrip("/")  # an absolute path as a/work/x.java, not a//work/x.java
    return "".join(difflib.unified_diff(result.original.splitlines(keepends=True),
                                        result.updated.splitlines(keepends=True),
                                        fromfile=f"a/{name}", tofile=f"b/{name}"))


def write_in_place(path: str, text: str) -> None:
    """Replace the file atomically (temporary file beside it, same permissions, renamed over it), newlines kept."""
    _, newline = read_source(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp_", suffix=".java", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text.replace("\n", newline))
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
