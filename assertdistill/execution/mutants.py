"""Mutants of a focal class, compiled once each: a mutation-tool interface, its registry, and LittleDarwin.

A `MutationTool` turns one focal source into compiled mutants (class directories that shadow the project's
own classes in a run). `LittleDarwin` (order-1, its traditional operators, mutated sources compiled with javac)
is the first; PIT, which mutates bytecode, would be one new class registered with `@mutation_tool("pit")`
writing its mutants' class files, chosen with evaluate_execution.py --mutation_tool.
"""

from __future__ import annotations

import hashlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.schema import SUM_COMPILED_MUTANTS, SUM_FOCAL_FILES, SUM_GENERATED, SUM_NOT_COMPILING, SUM_NOT_MUTATED
from .jvm import COMPILED, Jvm
from .project import JavaProject


class MutationUnavailable(RuntimeError):
    """LittleDarwin is not installed."""


@dataclass(frozen=True)
class Mutant:
    """One compiled mutant: its number among the focal file's mutants and the directory of its classes."""

    number: int
    classes: Path


@dataclass
class FocalMutants:
    """The mutants of one focal file: generated, compiled (usable) and how many did not compile."""

    generated: int
    mutants: list[Mutant]
    not_compiling: int
    error: str | None = None  # why none could be made (unparsable focal file, ...)


class MutantError(ValueError):
    """LittleDarwin could not mutate a source (its Java grammar does not cover every construct)."""


LITTLEDARWIN_RECURSION_LIMIT = 100000  # the limit LittleDarwin sets for itself on import


def generate_mutants(source: str) -> list[str]:
    """Every order-1 mutant LittleDarwin's traditional operators make of a Java source, sorted by text.

    Sorted because LittleDarwin's own order changes with Python's string hashing (PYTHONHASHSEED); each
    mutant's text starts with LittleDarwin's comment naming the operator, so the order groups by operator.
    """
    limit = sys.getrecursionlimit()  # LittleDarwin raises it for the whole process when imported
    try:
        from antlr4.error.Errors import CancellationException, RecognitionException
        from littledarwin.JavaMutate import JavaMutate
        from littledarwin.JavaParse import JavaParse
    except ImportError as error:
        raise MutationUnavailable("--mutants needs LittleDarwin: pip install littledarwin") from error
    finally:
        sys.setrecursionlimit(limit)
    parser = JavaParse(False)
    sys.setrecursionlimit(max(limit, LITTLEDARWIN_RECURSION_LIMIT))  # its parse trees recurse deeply
    try:
        tree = parser.parse(source)
        mutated, _ = JavaMutate(tree, source, parser, False).gatherMutants(["Traditional"])
    except (CancellationException, RecognitionException, RecursionError, AttributeError, TypeError, IndexError,
            KeyError, ValueError) as error:
        raise MutantError(f"{type(error).__name__}: {error}") from error
    finally:  # anything else in the process (json's C scanner on hostile records) keeps the usual limit
        sys.setrecursionlimit(limit)
    return sorted(mutated)


def spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread evenly over range(count) (all of them when count <= wanted)."""
    if count <= wanted:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(1, wanted - 1)) for i in range(wanted)}) if wanted > 1 else [0]


class MutationTool(ABC):
    """Makes up to `limit` compiled mutants of one focal file of a built project."""

    @abstractmethod
    def make(self, project: JavaProject, jvm: Jvm, focal_path: str, limit: int) -> FocalMutants:
        """The focal file's mutants, each compiled into its own directory under project.work_dir."""


MUTATION_TOOLS: dict[str, type[MutationTool]] = {}


def mutation_tool(name: str) -> Callable[[type[MutationTool]], type[MutationTool]]:
    """Class decorator: register a MutationTool under `name` (evaluate_execution.py --mutation_tool)."""
    def register(cls: type[MutationTool]) -> type[MutationTool]:
        MUTATION_TOOLS[name] = cls
        return cls
    return register


@mutation_tool("littledarwin")
class LittleDarwin(MutationTool):
    """LittleDarwin's order-1 traditional mutants of the focal source, `limit` of them spread over its list."""

    def make(self, project: JavaProject, jvm: Jvm, focal_path: str, limit: int) -> FocalMutants:
        """The focal file's mutants (sources under work_dir/mutants/<hash>/<number>/src, classes beside)."""
        source_file = project.root / focal_path
        try:
            source = source_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            return FocalMutants(0, [], 0, f"cannot read {focal_path}: {error}")
        try:
            mutated = generate_mutants(source)
        except MutantError as error:
            return FocalMutants(0, [], 0, f"LittleDarwin could not mutate {focal_path}: {error}")
        key = hashlib.sha1(focal_path.encode("utf-8")).hexdigest()[:12]
        mutants, not_compiling = [], 0
        for number in spread(len(mutated), limit):
            base = project.work_dir / "mutants" / key / str(number)
            source_dir, classes = base / "src", base / "classes"
            source_dir.mkdir(parents=True, exist_ok=True)
            classes.mkdir(parents=True, exist_ok=True)
            mutant_file = source_dir / Path(focal_path).name
            mutant_file.write_text(mutated[number], encoding="utf-8")
            reply = jvm.compile([*project.mutant_options(classes), str(mutant_file)])
            if reply.outcome == COMPILED:
                mutants.append(Mutant(number, classes))
            else:
                not_compiling += 1
        return FocalMutants(len(mutated), mutants, not_compiling)


class MutantCache:
    """Up to `limit` compiled mutants per focal file of one project, made on first use by `tool`."""

    def __init__(self, project: JavaProject, jvm: Jvm, limit: int, tool: MutationTool | None = None):
        self.project, self.jvm, self.limit = project, jvm, limit
        self.tool = tool or LittleDarwin()
        self._by_focal: dict[str, FocalMutants] = {}

    def for_focal(self, focal_path: str) -> FocalMutants:
        """The focal file's compiled mutants (cached)."""
        if focal_path not in self._by_focal:
            self._by_focal[focal_path] = self.tool.make(self.project, self.jvm, focal_path, self.limit)
        return self._by_focal[focal_path]

    def counts(self) -> dict[str, int]:
        """Focal files mutated, mutants generated, compiled (used) and not compiling, over this cache."""
        made = self._by_focal.values()
        return {SUM_FOCAL_FILES: len(self._by_focal), SUM_GENERATED: sum(m.generated for m in made),
                SUM_COMPILED_MUTANTS: sum(len(m.mutants) for m in made),
                SUM_NOT_COMPILING: sum(m.not_compiling for m in made),
                SUM_NOT_MUTATED: sum(m.error is not None for m in made)}
