"""generate_assertions.py's work: files -> model inputs -> the student's assertions -> diff, JSON or rewritten files."""

from __future__ import annotations

import difflib
import os
import secrets
import stat
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
from ..model.generation import DecodingSettings, generate
from ..retrieval.baseline import VALIDATION, Retriever
from ..retrieval.index import RetrievalIndex, RetrievalIndexError
from .saved_student import SavedStudent, SavedStudentError

TEST_NAME_ENDINGS = ("Test.java", "Tests.java", "TestCase.java", "IT.java")
TEMPORARY_SUFFIX = ".assertdistill-tmp"  # never *.java: a temporary file left by a kill cannot break a build
BOM = "\ufeff"
NO_NEWLINE = "\\ No newline at end of file\n"


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
    original: str  # the file as read: \n newlines, no BOM
    updated: str  # the same form, placeholders filled
    written: list[Written]
    without_focal: int
    outside_methods: int
    raw_original: str = ""  # the file's text exactly (BOM, CRLF and mixed line endings as they are)

    def raw_updated(self) -> str:
        """The updated text in the file's own form (keep_form)."""
        return keep_form(self.raw_original, self.original, self.updated)


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


def read_raw(path: str) -> str:
    """A .java file's text exactly as it is (a BOM as U+FEFF, CR LF kept); JavaInputError for other files."""
    if not path.endswith(".java"):
        raise JavaInputError(f"{path}: not a Java file (.java)")
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise JavaInputError(f"{path}: not UTF-8 text") from None


def normalized(raw: str) -> str:
    """The text the parser reads: no BOM, CR LF as LF (line i of it is line i of the file)."""
    return raw.removeprefix(BOM).replace("\r\n", "\n")


def keep_form(raw_original: str, original: str, updated: str) -> str:
    """`updated` (LF newlines, no BOM) in the form of the file it came from.

    Lines the update left alone are the file's own, byte for byte; each new line takes the ending of the line
    it replaces (the line before, for an insertion); the BOM and a missing final newline stay as they were.
    """
    raw_lines, old, new = raw_original.split("\n"), original.split("\n"), updated.split("\n")
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            out += raw_lines[i1:i2]
            continue
        reference = min(i1 if i1 < len(old) - 1 else i1 - 1, len(raw_lines) - 2)  # a line that ends in \n
        cr = "\r" if reference >= 0 and raw_lines[reference].endswith("\r") else ""
        out += [line + cr for line in new[j1:j2]]
        if j2 == len(new) and out:  # the last line has no newline: no CR of its own
            out[-1] = out[-1].removesuffix(cr) if not raw_lines[-1].endswith("\r") else out[-1]
    text = "\n".join(out)
    return BOM + text if raw_original.startswith(BOM) and not text.startswith(BOM) else text


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
        self.decoding = DecodingSettings(num_beams, self.max_length)
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
        ids = generate(model, input_ids, attention_mask, self.decoding)  # (1, L)
        text = self.student.tokenizer.decode(ids[0], skip_special_tokens=True)
        return text, (time.perf_counter() - started) * 1000

    def process(self, path: str, mask_existing: bool = False) -> FileResult:
        """Fill every placeholder of one file; JavaInputError for a file that cannot be used."""
        raw = read_raw(path)
        original = normalized(raw)
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
                          sum(1 for site in test_file.sites if site.focal_path is None), test_file.outside_methods,
                          raw)


def _diff_lines(text: str) -> list[str]:
    """Lines split at LF only (a form feed, U+2028 or a lone CR stays inside its line), each with its LF."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _hunk_range(start: int, length: int) -> str:
    return f"{start + 1 if length else start}" + ("" if length == 1 else f",{length}")


def unified_diff(result: FileResult) -> str:
    """The file's change as a unified diff that `patch -p1` and `git apply` apply (a/ and b/ prefixes).

    Lines are compared in the file's own form (CR LF, BOM); a last line without newline is marked as diff
    marks it ("\\ No newline at end of file").
    """
    name = result.path.lstrip("/")  # an absolute path as a/work/x.java, not a//work/x.java
    before, after = _diff_lines(result.raw_original), _diff_lines(result.raw_updated())
    out = []
    for group in difflib.SequenceMatcher(None, before, after, autojunk=False).get_grouped_opcodes(3):
        (_, i1, _, j1, _), (_, _, i2, _, j2) = group[0], group[-1]
        out.append(f"@@ -{_hunk_range(i1, i2 - i1)} +{_hunk_range(j1, j2 - j1)} @@\n")
        for tag, a1, a2, b1, b2 in group:
            lines = [(" ", line) for line in before[a1:a2]] if tag == "equal" else \
                [("-", line) for line in before[a1:a2]] + [("+", line) for line in after[b1:b2]]
            out += [sign + line + ("" if line.endswith("\n") else "\n" + NO_NEWLINE) for sign, line in lines]
    return f"--- a/{name}\n+++ b/{name}\n" + "".join(out) if out else ""


def _temporary_beside(target: str) -> tuple[int, str | None]:
    """(descriptor, None) of an unnamed file in target's directory (O_TMPFILE: a kill leaves nothing), or
    (descriptor, name) of a named one ending in TEMPORARY_SUFFIX where the file system cannot make one."""
    directory = os.path.dirname(target)
    try:
        return os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600), None
    except (AttributeError, OSError):
        handle, name = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=TEMPORARY_SUFFIX,
                                        dir=directory)
        return handle, name


def write_in_place(path: str, text: str) -> None:
    """Replace the file's contents atomically with `text` (already in its form, see keep_form).

    A symbolic link is written through (its target is replaced); the mode is kept; a read-only file is
    refused (JavaInputError). The new contents go to an unnamed temporary file beside the target that gets a
    name (not *.java) only for the rename over it.
    """
    target = os.path.realpath(path)
    status = os.stat(target)
    if not status.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(target, os.W_OK):
        raise JavaInputError(f"{path}: read-only (mode {stat.S_IMODE(status.st_mode):04o}); not rewritten")
    handle, name = _temporary_beside(target)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(text.encode("utf-8"))
            stream.flush()
            os.fchmod(stream.fileno(), stat.S_IMODE(status.st_mode))
            os.fsync(stream.fileno())
            if name is None:
                base = f".{os.path.basename(target)}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}"
                directory = os.open(os.path.dirname(target), os.O_DIRECTORY)
                try:  # linkat(2) with AT_SYMLINK_FOLLOW (a dir fd makes Python call it); it never replaces a file
                    os.link(f"/proc/self/fd/{stream.fileno()}", base, dst_dir_fd=directory, follow_symlinks=True)
                finally:
                    os.close(directory)
                name = os.path.join(os.path.dirname(target), base)
        os.replace(name, target)
    except BaseException:
        if name is not None and os.path.exists(name):
            os.unlink(name)
        raise
