"""A Java project's layout and its one-time build (main classes, the records' test classes): an interface and a registry.

`JavaProject` is what evaluation needs of a project; `DebianJarProject` (kind "debian_jars", the default)
compiles the sources with javac against jars in /usr/share/java. A Maven or Gradle project would be one new
class registered with `@project_kind("maven")` and chosen per repo by the layout's "kind".
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..data.records import RecordError
from .jvm import COMPILED, DEBIAN_JAVA_DIR, Jvm, find_java_tools, junit_jars

JAVAC_OPTIONS = ("-nowarn", "-proc:none", "-g", "-Xmaxerrs", "100000", "-XDsuppressNotes",
                 "-implicit:class")
MAX_BUILD_ROUNDS = 6  # compile, drop the files with errors, compile again (files that needed them fail next)
_ERROR_FILE = re.compile(r"^(.+?\.java):\d+: error:", flags=re.MULTILINE)


def _first_error(detail: str) -> str:
    """The first line of a compiler's output that names an error (else its first line), clipped."""
    lines = detail.strip().splitlines() or [""]
    return next((line for line in lines if ": error:" in line), lines[0])[:300]


class ProjectError(RecordError):
    """A project that cannot be used (its records are counted under `reason`)."""


@dataclass
class ProjectLayout:
    """Where a project's sources are (relative to its root) and the jars its code needs."""

    main: list[str] = field(default_factory=lambda: ["src/main/java"])
    test: list[str] = field(default_factory=lambda: ["src/test/java"])
    resources: list[str] = field(default_factory=lambda: ["src/main/resources", "src/test/resources"])
    jars: list[str] = field(default_factory=list)  # file names in /usr/share/java, or absolute paths
    # jars that use the project's own classes (truth uses guava): in each run's class loader after the
    # project's classes, not in the JVM's class path (whose classes cannot see the project's)
    jars_using_project: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)  # globs (relative paths) of sources never compiled
    release: str | None = None  # javac --release (None: the JDK's own)
    encoding: str = "UTF-8"  # of the sources
    prepare: list[list[str]] = field(default_factory=list)  # after the main build: `java -cp MAIN:JARS <args>`
    # ({main} in an argument is the main classes directory), run in the project root, e.g. a data compiler
    kind: str = "debian_jars"  # which registered JavaProject builds it (PROJECT_KINDS)


def load_layouts(path: str | None) -> dict[str, ProjectLayout]:
    """repo -> ProjectLayout from a JSON file ({repo: {main, test, resources, jars, ...}}); {} without one.

    "{projects}" in a source or resource directory is the JSON file's own directory (for sources kept beside it).
    """
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ProjectError("bad_projects_file", f"{path}: {error}") from error
    if not isinstance(data, dict):
        raise ProjectError("bad_projects_file", f"{path}: must hold a JSON object of repo -> layout")
    layouts = {}
    for repo, entry in data.items():
        if repo.startswith("_"):
            continue  # comments
        try:
            layout = ProjectLayout(**entry)
        except TypeError as error:
            raise ProjectError("bad_projects_file", f"{path}: {repo}: {error}") from error
        here = str(Path(path).resolve().parent)
        for name in ("main", "test", "resources"):
            setattr(layout, name, [d.replace("{projects}", here) for d in getattr(layout, name)])
        layouts[repo] = layout
    return layouts


def jar_paths(names: list[str], java_dir: Path = DEBIAN_JAVA_DIR) -> list[str]:
    """Jar names (in java_dir) or paths as paths; ProjectError(missing_jar) naming the first not installed."""
    paths = []
    for name in names:
        path = Path(name) if Path(name).is_absolute() else java_dir / name
        if not path.is_file():
            raise ProjectError("missing_jar", f"{path} is not installed")
        paths.append(str(path))
    return paths


class JavaProject(ABC):
    """What evaluation needs of a project: its builds, the class paths and javac options of candidates and mutants."""

    def __init__(self, root: Path, layout: ProjectLayout, work_dir: Path):
        self.root, self.layout, self.work_dir = root, layout, work_dir
        self.jars: list[str] = []  # on the runner JVM's class path
        self.late_jars: list[str] = []  # in each run's class loader, after the project's classes
        self.main_classes = work_dir / "main"
        self.test_classes = work_dir / "test"
        self.dropped_main: dict[str, str] = {}  # main sources left out because they did not compile -> first error
        self.test_errors: dict[str, str] = {}  # test file (relative) -> why it did not compile

    @abstractmethod
    def build_main(self, jvm: Jvm) -> None:
        """Build the main classes once; ProjectError(main_does_not_compile, first error) when none could be."""

    @abstractmethod
    def build_tests(self, jvm: Jvm, test_files: list[str]) -> None:
        """Build these test files' classes once; the errors of those that fail go to test_errors."""

    @abstractmethod
    def class_path(self) -> list[Path]:
        """A run's class loader entries after the candidate's own classes."""

    @abstractmethod
    def read_only_paths(self) -> list[Path]:
        """What a candidate's sandboxed JVM reads besides the project root."""

    @abstractmethod
    def candidate_options(self, out_dir: Path) -> list[str]:
        """javac options for a candidate's test file, classes to out_dir."""

    @abstractmethod
    def mutant_options(self, out_dir: Path) -> list[str]:
        """javac options for a mutant of a main source, classes to out_dir."""


PROJECT_KINDS: dict[str, type[JavaProject]] = {}


def project_kind(name: str) -> Callable[[type[JavaProject]], type[JavaProject]]:
    """Class decorator: register a JavaProject under the layout "kind" `name`."""
    def register(cls: type[JavaProject]) -> type[JavaProject]:
        PROJECT_KINDS[name] = cls
        return cls
    return register


def make_project(root: Path, layout: ProjectLayout, work_dir: Path) -> JavaProject:
    """The registered project of the layout's kind; ProjectError(unknown_project_kind) for another."""
    if layout.kind not in PROJECT_KINDS:
        raise ProjectError("unknown_project_kind", f"kind {layout.kind!r}; known: {', '.join(sorted(PROJECT_KINDS))}")
    return PROJECT_KINDS[layout.kind](root, layout, work_dir)


@project_kind("debian_jars")
class DebianJarProject(JavaProject):
    """Sources compiled with javac against jars in /usr/share/java, once into work_dir: main, then tests asked for."""

    def __init__(self, root: Path, layout: ProjectLayout, work_dir: Path):
        super().__init__(root, layout, work_dir)
        self.jars = jar_paths(layout.jars)
        self.late_jars = jar_paths(layout.jars_using_project)
        self.built_tests: set[str] = set()

    def _relative(self, path: Path) -> str:
        """A source's path relative to the project root, or absolute when it lies outside (e.g. stubs)."""
        resolved, root = path.resolve(), self.root.resolve()
        return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)

    def _excluded(self, relative: str) -> bool:
        return relative.endswith("module-info.java") or any(fnmatch.fnmatch(relative, p) for p in self.layout.exclude)

    def resource_dirs(self) -> list[Path]:
        """The existing resource directories."""
        return [self.root / d for d in self.layout.resources if (self.root / d).is_dir()]

    def class_path(self) -> list[Path]:
        """Test classes, main classes and resources (the per-run class loader's entries after a candidate's)."""
        return [self.test_classes, self.main_classes, *self.resource_dirs(), *map(Path, self.late_jars)]

    def _options(self, class_path: list[str], out_dir: Path, source_path: list[Path] | None = None) -> list[str]:
        options = [*JAVAC_OPTIONS, "-encoding", self.layout.encoding, "-d", str(out_dir),
                   "-cp", ":".join([*class_path, *junit_jars()])]
        if self.layout.release:
            options += ["--release", self.layout.release]
        if source_path:
            options += ["-sourcepath", ":".join(str(p) for p in source_path)]
        return options

    def _compile_dropping(self, jvm: Jvm, files: list[str], options: list[str]) -> tuple[list[str], dict[str, str]]:
        """Compile files (relative), dropping those javac reports errors in until the rest compiles.

        Returns (compiled files, {dropped file: first error}); all dropped when errors lie only elsewhere.
        """
        remaining, dropped = list(files), {}
        for _ in range(MAX_BUILD_ROUNDS):
            if not remaining:
                break
            reply = jvm.compile([*options, *(str(self.root / f) for f in remaining)])
            if reply.outcome == COMPILED:
                return remaining, dropped
            bad = {self._relative(Path(p)) for p in _ERROR_FILE.findall(reply.detail)}
            bad_listed = [f for f in remaining if f in bad]
            if not bad_listed:  # errors only in sources pulled in from the source path, or none named
                dropped.update({f: reply.detail[:500] for f in remaining})
                return [], dropped
            for f in bad_listed:
                dropped[f] = next((line for line in reply.detail.splitlines() if f in line), reply.detail[:300])
            remaining = [f for f in remaining if f not in bad]
        dropped.update({f: "still not compiling after several rounds" for f in remaining})
        return [], dropped

    def build_main(self, jvm: Jvm) -> None:
        """Compile every main source once (those that do not compile are left out and counted)."""
        if (self.main_classes / ".built").is_file():  # built by an earlier run in this work directory
            try:
                self.dropped_main = json.loads((self.main_classes / ".built").read_text(encoding="utf-8"))
            except ValueError:  # written by a version that kept only the names
                self.dropped_main = {}
            return
        files = sorted(self._relative(p) for d in self.layout.main for p in (self.root / d).rglob("*.java"))
        files = [f for f in files if not self._excluded(f)]
        if not files:
            raise ProjectError("no_main_sources", f"no .java file under {self.layout.main} in {self.root}")
        self.main_classes.mkdir(parents=True, exist_ok=True)
        compiled, dropped = self._compile_dropping(jvm, files, self._options(self.jars, self.main_classes))
        self.dropped_main = {f: _first_error(dropped[f]) for f in sorted(dropped)}
        if not compiled:
            raise ProjectError("main_does_not_compile", _first_error(next(iter(dropped.values()), "no file compiled")))
        self._prepare()
        (self.main_classes / ".built").write_text(json.dumps(self.dropped_main), encoding="utf-8")

    def _prepare(self) -> None:
        """Run the layout's prepare commands; ProjectError(prepare_failed) when one fails."""
        java, _ = find_java_tools()
        class_path = ":".join([str(self.main_classes), *self.jars])
        for arguments in self.layout.prepare:
            command = [java, "-cp", class_path, *(a.replace("{main}", str(self.main_classes)) for a in arguments)]
            try:
                done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise ProjectError("prepare_failed", f"{' '.join(arguments[:2])}: {error}") from error
            if done.returncode != 0:
                raise ProjectError("prepare_failed", f"{' '.join(arguments[:2])}: {done.stderr.strip()[-300:]}")

    def build_tests(self, jvm: Jvm, test_files: list[str]) -> None:
        """Compile the given test files (and test sources they use) once; errors kept per file."""
        wanted = sorted(set(test_files) - self.built_tests - set(self.test_errors))
        if not wanted:
            return
        self.test_classes.mkdir(parents=True, exist_ok=True)
        options = self._options([str(self.main_classes), *self.jars, *self.late_jars], self.test_classes,
                                [self.root / d for d in self.layout.test])
        compiled, dropped = self._compile_dropping(jvm, wanted, options)
        if dropped and not compiled:  # one at a time, so one file's errors do not sink the others
            compiled, dropped = [], {}
            for f in wanted:
                done, errors = self._compile_dropping(jvm, [f], options)
                compiled += done
                dropped.update(errors)
        self.built_tests.update(compiled)
        self.test_errors.update(dropped)

    def read_only_paths(self) -> list[Path]:
        """What a candidate's sandboxed JVM reads besides the project root: the build, resources and jars."""
        return [self.main_classes, self.test_classes, *self.resource_dirs(), *map(Path, self.jars),
                *map(Path, self.late_jars)]

    def candidate_options(self, out_dir: Path) -> list[str]:
        """javac options for a candidate's test file: the built test and main classes on the class path."""
        return self._options([str(self.test_classes), str(self.main_classes), *self.jars, *self.late_jars], out_dir)

    def mutant_options(self, out_dir: Path) -> list[str]:
        """javac options for a mutant of a main source: the built main classes on the class path."""
        return self._options([str(self.main_classes), *self.jars], out_dir)
