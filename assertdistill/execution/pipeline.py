"""Execution-grounded evaluation: each record's candidates compiled into its real test and run alone, with mutants."""

from __future__ import annotations

import collections
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.schema import (
    EXEC_CANDIDATE,
    EXEC_COMPILED,
    EXEC_DETAIL,
    EXEC_KILLED,
    EXEC_KILLED_MUTANTS,
    EXEC_MUTANTS,
    EXEC_OUTCOME,
    EXEC_PASSED,
    EXEC_SECONDS,
    PROJECT_BUILD_SECONDS,
    PROJECT_JVM_STARTS,
    PROJECT_LEFT_OUT_MAIN_FILES,
    PROJECT_MAIN_BUILD_ERROR,
    PROJECT_MAIN_LEFT_OUT,
    PROJECT_RECORDS,
    PROJECT_RESTARTS,
    PROJECT_SECONDS,
    PROJECT_TESTS_NOT_COMPILING,
    ROW_GROUND_TRUTH,
    ROW_INDEX,
    ROW_REPO,
    ROW_TEST_METHOD,
    ROW_TEST_PATH,
    STATUS_BAD_INPUT,
    STATUS_COUNTED,
    STATUS_ENVIRONMENT,
)
from .jvm import (
    COMPILE_TIMEOUT,
    COMPILED,
    JVM_DIED,
    PASSED,
    Jvm,
    JvmMounts,
    build_runner,
)
from .mutants import MUTATION_TOOLS, FocalMutants, MutantCache
from .project import ProjectError, ProjectLayout, make_project
from .rows import ExecutionRecord, read_rows, result_row
from .sandbox import Sandbox, sandbox_for
from .source import MaskedTest, SourceError, mask_test

DETAIL_CHARS = 300
__all__ = ["ExecutionSettings", "ProjectRun", "evaluate_records", "in_order", "read_rows", "write_rows"]
ISOLATION_CANDIDATE, ISOLATION_LEAK = "candidate", "leak"  # a fresh JVM per candidate / one restarted on leftovers
ISOLATIONS = (ISOLATION_CANDIDATE, ISOLATION_LEAK)


@dataclass
class ExecutionSettings:
    """How to evaluate: candidates, timeout per test run, mutants per focal file, layouts, work directory."""

    java_root: Path
    work_dir: Path
    candidates: tuple[str, ...]
    timeout_seconds: float = 10.0
    mutants: int = 0
    layouts: dict[str, ProjectLayout] = field(default_factory=dict)
    heap: str = "2g"
    compile_timeout_seconds: float = 60.0  # one candidate's javac; a bomb becomes outcome compile_timeout
    sandbox: Sandbox | None = None  # the walls around candidate JVMs; None: sandbox_for(heap), checked
    # (running candidates unconfined takes an explicit Sandbox(None): --unsafe_no_sandbox)
    isolation: str = ISOLATION_CANDIDATE  # ISOLATIONS
    mutation_tool: str = "littledarwin"  # a name in mutants.MUTATION_TOOLS


def _not_counted(record: ExecutionRecord, candidates, status: str, reason: str, detail: str) -> list[dict]:
    rows = [result_row(record.index, record.location, c, record.texts.get(c), status, reason) for c in candidates
            if c in record.texts]
    for row in rows:
        row[EXEC_DETAIL] = detail[:DETAIL_CHARS]
    return rows


class ProjectRun:
    """Evaluates the records of one project: one trusted JVM builds, sandboxed JVMs run the candidates.

    Isolation `candidate`: every candidate (ground truth included) gets a fresh JVM for its compile, run and
    mutant runs. Isolation `leak`: one candidate JVM for the project, restarted whenever a run left anything
    behind. Either way a JVM is restarted after a run that left JVM-wide state or files in its scratch.
    """

    def __init__(self, repo: str, settings: ExecutionSettings, runner_dir: Path):
        self.repo, self.settings = repo, settings
        self.root = settings.java_root / repo
        work = settings.work_dir / repo
        self.runner_dir = runner_dir
        self.project = make_project(self.root, settings.layouts.get(repo, ProjectLayout()), work)
        # builds compile the project's own sources (javac -proc:none runs none of their code): not sandboxed
        self.jvm = Jvm(runner_dir, self.project.jars, self.root, work / "scratch", settings.heap)
        tool = MUTATION_TOOLS[settings.mutation_tool]()
        self.mutants = MutantCache(self.project, self.jvm, settings.mutants, tool) if settings.mutants else None
        self.build_seconds = 0.0
        self.candidate_jvm_starts = 0
        self.restarts_after_leftovers = 0
        self._candidate_number = 0
        self._shared: Jvm | None = None
        self.build_error: str | None = None  # why the main build failed (its first compiler error)

    @property
    def jvm_starts(self) -> int:
        """JVMs started for this project: the build JVM's and the candidates'."""
        return self.jvm.starts + self.candidate_jvm_starts + (self._shared.starts if self._shared else 0)

    def evaluate(self, records: list[ExecutionRecord]) -> list[dict]:
        """Rows of every record and candidate of this project."""
        started = time.time()
        try:
            self.project.build_main(self.jvm)
        except ProjectError as error:
            self.build_seconds = time.time() - started
            self.build_error = f"{error.reason}: {error}"
            return [row for r in records for row in self._env(r, error.reason, str(error))]
        present = [r for r in records if (self.root / r.location[ROW_TEST_PATH]).is_file()]
        self.project.build_tests(self.jvm, sorted({r.location[ROW_TEST_PATH] for r in present}))
        self.jvm.close()  # the build JVM is not needed again unless mutants are made
        self.build_seconds = time.time() - started
        (self.project.work_dir / "mutants").mkdir(parents=True, exist_ok=True)
        rows = []
        for record in records:
            rows += self._record(record)
        return rows

    def _env(self, record: ExecutionRecord, reason: str, detail: str) -> list[dict]:
        return _not_counted(record, self.settings.candidates, STATUS_ENVIRONMENT, reason, detail)

    def _record(self, record: ExecutionRecord) -> list[dict]:
        test_path = record.location[ROW_TEST_PATH]
        test_file = self.root / test_path
        if not test_file.is_file():
            return _not_counted(record, self.settings.candidates, STATUS_BAD_INPUT, "missing_test_file", str(test_file))
        if test_path in self.project.test_errors:
            return self._env(record, "test_file_does_not_compile", self.project.test_errors[test_path])
        try:
            text = test_file.read_text(encoding=self.project.layout.encoding)
            masked = mask_test(text, record.location[ROW_TEST_METHOD], record.texts[ROW_GROUND_TRUTH])
        except SourceError as error:
            return _not_counted(record, self.settings.candidates, STATUS_BAD_INPUT, error.reason, str(error))
        except (OSError, UnicodeDecodeError, LookupError) as error:
            return _not_counted(record, self.settings.candidates, STATUS_BAD_INPUT, "unreadable_test_file", str(error))
        truth = self._candidate(record, masked, ROW_GROUND_TRUTH)
        if not truth[EXEC_PASSED]:
            reason = "ground_truth_" + (truth[EXEC_OUTCOME] if truth[EXEC_COMPILED] else
                                        truth[EXEC_OUTCOME] if truth[EXEC_OUTCOME] == COMPILE_TIMEOUT else "compile_error")
            return self._env(record, reason, truth[EXEC_DETAIL] or "")
        rows = [truth] if ROW_GROUND_TRUTH in self.settings.candidates else []
        for candidate in self.settings.candidates:
            if candidate != ROW_GROUND_TRUTH and candidate in record.texts:
                rows.append(self._candidate(record, masked, candidate))
        return rows

    def _focal_mutants(self, record: ExecutionRecord) -> FocalMutants | None:
        if self.mutants is None or record.focal_path is None:
            return None
        focal = self.mutants.for_focal(record.focal_path)
        self.jvm.close()
        return focal

    def _candidate_jvm(self, base: Path) -> Jvm:
        """The JVM a candidate runs in: its own (isolation candidate) or the project's shared one."""
        sandbox = self.settings.sandbox
        work = self.project.work_dir
        read_only = [self.runner_dir, self.root, *self.project.read_only_paths(), work / "mutants"]
        if self.settings.isolation == ISOLATION_LEAK:
            if self._shared is None:
                candidates = sandbox.prepare_writable(work / "candidates")
                self._shared = Jvm(self.runner_dir, self.project.jars, self.root, work / "candidates" / "scratch",
                                   self.settings.heap, sandbox, JvmMounts(read_only, [candidates]))
            return self._shared
        return Jvm(self.runner_dir, self.project.jars, self.root, base / "scratch", self.settings.heap, sandbox,
                   JvmMounts([*read_only, base / "src"], [base / "classes"]))

    def _run(self, jvm: Jvm, class_path: list[Path], masked: MaskedTest, method: str):
        """One test run; the JVM is ended afterwards when the run left state or files behind."""
        reply = jvm.run_test(class_path, masked.class_name, method, self.settings.timeout_seconds)
        files_left = jvm.scratch.is_dir() and any(jvm.scratch.iterdir())
        if reply.left_behind or files_left:
            self.restarts_after_leftovers += 1
            jvm.close()
            shutil.rmtree(jvm.scratch, ignore_errors=True)  # a fresh one is made at the next start
        return reply

    def _candidate(self, record: ExecutionRecord, masked: MaskedTest, candidate: str) -> dict:
        started = time.time()
        row = result_row(record.index, record.location, candidate, record.texts[candidate], STATUS_COUNTED)
        self._candidate_number += 1
        base = self.project.work_dir / "candidates" / str(self._candidate_number)
        source_file = base / "src" / Path(record.location[ROW_TEST_PATH]).name
        classes = self.settings.sandbox.prepare_writable(base / "classes")
        source_file.parent.mkdir(parents=True, exist_ok=True)
        source_file.write_text(masked.with_candidate(record.texts[candidate]), encoding=self.project.layout.encoding,
                               errors="replace")  # a character the project's encoding lacks becomes '?'
        jvm = self._candidate_jvm(base)
        starts = jvm.starts
        try:
            reply = jvm.compile([*self.project.candidate_options(classes), str(source_file)],
                                self.settings.compile_timeout_seconds)
            row[EXEC_COMPILED] = reply.outcome == COMPILED
            if reply.outcome == JVM_DIED:
                row[EXEC_COMPILED], row[EXEC_OUTCOME] = None, JVM_DIED
            if not row[EXEC_COMPILED]:
                row[EXEC_OUTCOME] = row[EXEC_OUTCOME] or reply.outcome
                row[EXEC_DETAIL], row[EXEC_PASSED] = reply.detail[:DETAIL_CHARS], False
            else:
                run = self._run(jvm, [classes, *self.project.class_path()], masked, record.location[ROW_TEST_METHOD])
                row[EXEC_OUTCOME], row[EXEC_PASSED] = run.outcome, run.outcome == PASSED
                row[EXEC_DETAIL] = run.detail[:DETAIL_CHARS] or None
            if candidate == ROW_GROUND_TRUTH and not row[EXEC_PASSED]:
                return row
            focal = self._focal_mutants(record)
            if focal is not None:
                self._kill(jvm, record, masked, row, classes, focal)
        finally:
            if jvm is not self._shared:
                self.candidate_jvm_starts += jvm.starts - starts
                jvm.close()
        row[EXEC_SECONDS] = round(time.time() - started, 3)
        return row

    def _kill(self, jvm: Jvm, record: ExecutionRecord, masked: MaskedTest, row: dict, classes: Path,
              focal: FocalMutants) -> None:
        """Run a passing candidate against each mutant; fill mutants / killed / killed_mutants."""
        row[EXEC_MUTANTS] = len(focal.mutants)
        if not row[EXEC_PASSED]:
            row[EXEC_KILLED], row[EXEC_KILLED_MUTANTS] = 0, []
            return
        killed = []
        for mutant in focal.mutants:
            run = self._run(jvm, [classes, mutant.classes, *self.project.class_path()], masked,
                            record.location[ROW_TEST_METHOD])
            if run.outcome != PASSED:
                killed.append(mutant.number)
        row[EXEC_KILLED], row[EXEC_KILLED_MUTANTS] = len(killed), killed

    def close(self) -> None:
        """End the project's JVMs."""
        self.jvm.close()
        if self._shared is not None:
            self._shared.close()


def evaluate_records(records: list[ExecutionRecord], settings: ExecutionSettings, progress=None) -> tuple[list[dict], dict, dict]:
    """(result rows in record order, per-project build facts, mutant counts) for records grouped by project."""
    runner_dir = build_runner(settings.work_dir / "runner") if records else settings.work_dir
    if settings.sandbox is None and records:
        settings.sandbox = sandbox_for(settings.heap, unsafe=False)
    by_repo: dict[str, list[ExecutionRecord]] = collections.defaultdict(list)
    for record in records:
        by_repo[record.location[ROW_REPO]].append(record)
    rows, projects = [], {}
    mutation = collections.Counter()
    for repo, group in by_repo.items():
        started = time.time()
        if not (settings.java_root / repo).is_dir():
            rows += [row for r in group for row in _not_counted(r, settings.candidates, STATUS_BAD_INPUT,
                                                                 "missing_project", str(settings.java_root / repo))]
            continue
        try:
            run = ProjectRun(repo, settings, runner_dir)
        except ProjectError as error:
            rows += [row for r in group for row in _not_counted(r, settings.candidates, STATUS_ENVIRONMENT,
                                                                 error.reason, str(error))]
            continue
        try:
            rows += run.evaluate(group)
        finally:
            run.close()
        projects[repo] = {PROJECT_RECORDS: len(group), PROJECT_MAIN_LEFT_OUT: len(run.project.dropped_main),
                          PROJECT_LEFT_OUT_MAIN_FILES: run.project.dropped_main,
                          PROJECT_MAIN_BUILD_ERROR: run.build_error, PROJECT_RESTARTS: run.restarts_after_leftovers,
                          PROJECT_TESTS_NOT_COMPILING: len(run.project.test_errors),
                          PROJECT_BUILD_SECONDS: round(run.build_seconds, 1),
                          PROJECT_SECONDS: round(time.time() - started, 1), PROJECT_JVM_STARTS: run.jvm_starts}
        if run.mutants is not None:
            mutation.update(run.mutants.counts())
        if progress is not None:
            progress(repo, len(group), projects[repo])
    return rows, projects, dict(mutation)


def in_order(rows: list[dict], candidates: tuple[str, ...]) -> list[dict]:
    """Rows sorted by record index (non-integer indices first), then in the order of the candidates."""
    return sorted(rows, key=lambda row: (row[ROW_INDEX] if isinstance(row[ROW_INDEX], int) else -1,
                                         candidates.index(row[EXEC_CANDIDATE])))


def write_rows(path: Path, rows: list[dict]) -> None:
    """execution.jsonl: one JSON object per record and candidate."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
