"""Mine JUnit test methods from Java source trees into assertion records (see docs/DATA_FORMAT.md).

One record per test method: the method with its assertion statements masked, the assertions, and the
source of the class under test ("focal" class). Every test method found is either written or counted
under exactly one skip reason (MiningStats.skips).

Decisions (documented here because the records depend on them):
- Test files are .java files below a directory named `test` or `tests` (src/test/java, guava-tests/test);
  every other .java file is only indexed as a possible focal class.
- Test methods: JUnit 4/5 methods annotated @Test, @ParameterizedTest, @RepeatedTest, @TestFactory or
  @TestTemplate (any package, so TestNG's @Test too), and JUnit 3 methods (public, non-static, void,
  no parameters, name test*) of a class whose superclass is TestCase, a repo test class that is itself
  a JUnit 3 class, or an external class named *TestCase. @Nested classes are searched too.
- Assertion statement: an expression statement (or `x = ...` assignment, or local variable declaration)
  whose call, or the first call of a fluent chain, is named assert* or fail. Such statements are masked
  wherever they sit in ordinary nested blocks (if/else, loops, try/catch/finally, switch, synchronized).
- An assert/fail call left outside every masked statement (inside a lambda or anonymous/local class,
  or as an argument of some other call) drops the method: skip reason assert_in_lambda_or_nested or
  assert_in_other_expression. Java's `assert` keyword statement is not a call and is left in place.
"""

from __future__ import annotations

import bisect
import collections
import fnmatch
import hashlib
import os
import posixpath
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import tree_sitter_java
from tree_sitter import Language, Node, Parser, Query, QueryCursor

JAVA = Language(tree_sitter_java.language())
PLACEHOLDER = "// <ASSERTION_PLACEHOLDER>"
TEST_ANNOTATIONS = frozenset({"Test", "ParameterizedTest", "RepeatedTest", "TestFactory", "TestTemplate"})
TEST_DIR_NAMES = frozenset({"test", "tests"})
CLASS_TYPES = frozenset({"class_declaration", "interface_declaration", "record_declaration"})
BOUNDARY_TYPES = frozenset({"lambda_expression", "class_body"})  # code that runs later / elsewhere
ASSERT_NAME = re.compile(r"assert\w*|fail")
SKIP_REASONS = ("parse_error", "no_body", "no_assertions", "assert_in_lambda_or_nested",
                "assert_in_other_expression", "no_focal", "duplicate")

COUNT_ORDER = ("repos", "java_files", "files_excluded", "test_files_parsed", "test_files_with_parse_errors",
               "test_classes", "test_methods", "test_methods_annotated", "test_methods_junit3",
               "samples_written", "focal_by_name", "focal_by_name_prefix", "focal_by_fallback")
ASSERT_CALL_QUERY = Query(JAVA, """
(method_invocation name: (identifier) @name (#match? @name "^(assert|fail$)"))
(method_reference (identifier) @name (#match? @name "^(assert|fail$)"))
""")
REFERENCE_QUERY = Query(JAVA, """
(type_identifier) @ref
(method_invocation object: (identifier) @ref)
(field_access object: (identifier) @ref)
(import_declaration (scoped_identifier name: (identifier) @ref))
""")
_TEST_AFFIX = re.compile(r"(Tests|TestCase|Test|ITCase|IT)$")
_CAMEL_CUT = re.compile(r"(?<=[a-z0-9])[A-Z]")
_LEADING_COMMENT = re.compile(r"\s*(/\*[\s\S]*?\*/|(?://[^\n]*(?:\n[ \t]*|$))+)")
_LICENSE_WORDS = re.compile(r"licen[cs]e|copyright", re.IGNORECASE)
_FIRST_CODE = re.compile(r"\s*(?:(?:/\*[\s\S]*?\*/|//[^\n]*)\s*)*(package|import)\b")
_LEXEME = re.compile(r'"""[\s\S]*?"""|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*[\s\S]*?\*/|\s+')


@dataclass
class MiningStats:
    """Counters for everything seen; every test method ends up in `samples` or one of `skips`."""

    counts: collections.Counter = field(default_factory=collections.Counter)
    skips: collections.Counter = field(default_factory=collections.Counter)

    def format(self) -> str:
        """Render the counters as aligned `name value` lines (skip reasons last, zeros included)."""
        names = [n for n in COUNT_ORDER if n in self.counts] + sorted(set(self.counts) - set(COUNT_ORDER))
        lines = [f"{name:36s} {self.counts[name]}" for name in names]
        lines += [f"{'skipped_' + reason:36s} {self.skips[reason]}" for reason in SKIP_REASONS]
        return "\n".join(lines)

    def check(self) -> None:
        """Assert that no test method went uncounted."""
        accounted = self.counts["samples_written"] + sum(self.skips.values())
        assert self.counts["test_methods"] == accounted, (self.counts, self.skips)


def make_parser() -> Parser:
    """Return a tree-sitter parser for Java."""
    return Parser(JAVA)


def read_java(path: Path, stats: MiningStats) -> str:
    """Read a source file as text with \\n newlines (UTF-8, falling back to Latin-1, counted)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        stats.counts["files_decoded_latin1"] += 1
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_license_header(text: str) -> str:
    """Drop leading comments mentioning a licence/copyright when they precede `package`/`import`."""
    pos = 0
    while (match := _LEADING_COMMENT.match(text, pos)) and _LICENSE_WORDS.search(match.group(1)):
        pos = match.end()
    if pos == 0 or not _FIRST_CODE.match(text, pos):
        return text
    return text[pos:].lstrip()


def one_line(statement_text: str) -> str:
    """Collapse whitespace runs to one space outside string literals; `// c` becomes `/* c */`."""
    def fix(match: re.Match) -> str:
        lexeme = match.group(0)
        if lexeme.isspace():
            return " "
        if lexeme.startswith("//"):
            return "/* " + lexeme[2:].strip() + " */"
        if lexeme.startswith("/*"):
            return re.sub(r"\s+", " ", lexeme)
        return lexeme
    return _LEXEME.sub(fix, statement_text).strip()


def focal_name_candidates(test_class: str) -> list[str]:
    """Class names a test class is named after: FooTest(s)/FooIT/FooTestCase/TestFoo/TestFoo_Bar -> Foo."""
    candidates = []
    for base in (test_class, test_class.split("_")[0]):
        name = _TEST_AFFIX.sub("", base)
        if name == base and re.match(r"Test[A-Z]", base):
            name = base[4:]
        if name and name != test_class and name not in candidates:
            candidates.append(name)
    return candidates


def camel_prefixes(name: str) -> list[str]:
    """Proper CamelCase prefixes of a name, longest first: StrBuilderAppend -> StrBuilder, Str."""
    return [name[:m.start()] for m in reversed(list(_CAMEL_CUT.finditer(name)))]


def is_test_path(rel_path: str) -> bool:
    """True when a repo-relative path lies below a directory named test/tests."""
    return any(part.lower() in TEST_DIR_NAMES for part in rel_path.split("/")[:-1])


def test_group_path(rel_path: str) -> str:
    """The part of a test path below its last test dir (mirrored copies such as guava's android/ share it)."""
    parts = rel_path.split("/")
    last = max((i for i, part in enumerate(parts[:-1]) if part.lower() in TEST_DIR_NAMES), default=-1)
    return "/".join(parts[last + 1:])


class RepoIndex:
    """All .java files of one repository, indexed by class (file) name, with cached focal lookups."""

    def __init__(self, root: Path, name: str, exclude: Iterable[str], stats: MiningStats):
        self.root, self.name, self.stats = root, name, stats
        self.files: list[str] = []
        self.by_class: dict[str, list[str]] = collections.defaultdict(list)
        self._lookup_cache: dict[tuple, str | None] = {}
        self._text_cache: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if not filename.endswith(".java"):
                    continue
                rel = Path(dirpath, filename).relative_to(root).as_posix()
                if any(fnmatch.fnmatch(f"{name}/{rel}", pattern) for pattern in exclude):
                    stats.counts["files_excluded"] += 1
                    continue
                self.files.append(rel)
                self.by_class[filename[:-5]].append(rel)
        stats.counts["java_files"] += len(self.files)

    def find_class(self, class_name: str, test_path: str, package_dir: str) -> str | None:
        """Best non-test file named class_name: same package, longest shared path prefix, shallowest."""
        key = (class_name, posixpath.dirname(test_path), package_dir)
        if key not in self._lookup_cache:
            test_parts = test_path.split("/")
            best = None
            for path in self.by_class.get(class_name, ()):
                if is_test_path(path):
                    continue
                folder = posixpath.dirname(path)
                same_package = not package_dir or folder == package_dir or folder.endswith("/" + package_dir)
                shared = len(os.path.commonprefix([path.split("/"), test_parts]))
                rank = (not same_package, -shared, path.count("/"), path)
                best = min(best, rank) if best else rank
            self._lookup_cache[key] = best[-1] if best else None
        return self._lookup_cache[key]

    def has_production_class(self, class_name: str) -> bool:
        """True when some non-test file of the repo is named class_name."""
        return any(not is_test_path(p) for p in self.by_class.get(class_name, ()))

    def focal_text(self, rel_path: str) -> str:
        """Source of a focal file with its licence header stripped (read once, then cached)."""
        if rel_path not in self._text_cache:
            self._text_cache[rel_path] = strip_license_header(read_java(self.root / rel_path, self.stats))
        return self._text_cache[rel_path]


@dataclass
class TestClass:
    """A class declaration found in a test file (nested classes get dotted names)."""

    name: str
    simple_name: str
    top_level: str
    superclass: str | None
    body: Node


@dataclass
class ParsedFile:
    """A parsed test file and what mining needs from it."""

    rel_path: str
    src: bytes
    root: Node
    package_dir: str
    classes: list[TestClass]


def _text(node: Node) -> str:
    return node.text.decode("utf-8")


def _simple_type_name(type_node: Node) -> str:
    return re.sub(r"<.*", "", _text(type_node), flags=re.S).split(".")[-1].strip()


def _collect_classes(container: Node, outer: str | None, top_level: str | None) -> list[TestClass]:
    found = []
    for node in container.named_children:
        if node.type not in CLASS_TYPES or node.child_by_field_name("body") is None:
            continue
        simple = _text(node.child_by_field_name("name"))
        superclass_node = node.child_by_field_name("superclass")
        superclass = _simple_type_name(superclass_node.named_children[0]) if superclass_node else None
        name = f"{outer}.{simple}" if outer else simple
        body = node.child_by_field_name("body")
        found.append(TestClass(name, simple, top_level or simple, superclass, body))
        found += _collect_classes(body, name, top_level or simple)
    return found


def parse_test_file(parser: Parser, rel_path: str, text: str) -> ParsedFile:
    """Parse a test file once and collect its package and class declarations."""
    src = text.encode("utf-8")
    root = parser.parse(src).root_node
    package_dir = ""
    for node in root.named_children:
        if node.type == "package_declaration":
            names = [c for c in node.named_children if c.type in ("identifier", "scoped_identifier")]
            package_dir = _text(names[0]).replace(".", "/") if names else ""
    return ParsedFile(rel_path, src, root, package_dir, _collect_classes(root, None, None))


def _annotation_names(method: Node) -> set[str]:
    names = set()
    for child in method.children:
        if child.type == "modifiers":
            for mod in child.named_children:
                if mod.type in ("marker_annotation", "annotation"):
                    names.add(_text(mod.child_by_field_name("name")).split(".")[-1])
    return names


def _modifier_keywords(method: Node) -> set[str]:
    return {c.type for m in method.children if m.type == "modifiers" for c in m.children if not c.is_named}


def test_kind(method: Node, junit3_class: bool) -> str | None:
    """'annotated' for @Test-style methods, 'junit3' for JUnit 3 test methods, else None."""
    if _annotation_names(method) & TEST_ANNOTATIONS:
        return "annotated"
    if not junit3_class or not _text(method.child_by_field_name("name")).startswith("test"):
        return None
    keywords = _modifier_keywords(method)
    params = method.child_by_field_name("parameters")
    if ("public" in keywords and not keywords & {"static", "abstract"}
            and method.child_by_field_name("type").type == "void_type" and params.named_child_count == 0):
        return "junit3"
    return None


def _is_assert_call(expr: Node | None) -> bool:
    """True when expr is a call whose first call in a fluent chain is named assert*/fail."""
    if expr is None or expr.type != "method_invocation":
        return False
    while (inner := expr.child_by_field_name("object")) is not None and inner.type == "method_invocation":
        expr = inner
    return ASSERT_NAME.fullmatch(_text(expr.child_by_field_name("name"))) is not None


def is_assertion_statement(stmt: Node) -> bool:
    """Expression statement / assignment / local variable declaration around an assert* or fail call."""
    if stmt.type == "expression_statement" and stmt.named_child_count:
        expr = stmt.named_children[0]
        if expr.type == "assignment_expression":
            expr = expr.child_by_field_name("right")
        return _is_assert_call(expr)
    if stmt.type == "local_variable_declaration":
        declarators = stmt.children_by_field_name("declarator")
        return any(_is_assert_call(d.child_by_field_name("value")) for d in declarators)
    return False


def assertion_statements(body: Node) -> list[Node]:
    """Assertion statements of a method body, in ordinary nested blocks too, not inside lambdas/classes."""
    found, stack = [], [body]
    while stack:
        for child in stack.pop().named_children:
            if child.type in ("expression_statement", "local_variable_declaration"):
                if is_assertion_statement(child):
                    found.append(child)
            elif child.type not in BOUNDARY_TYPES:
                stack.append(child)
    return sorted(found, key=lambda n: n.start_byte)


def _line_indent(src: bytes, pos: int) -> bytes:
    line_start = src.rfind(b"\n", 0, pos) + 1
    return re.match(rb"[ \t]*", src[line_start:pos]).group(0)


def mask_span(src: bytes, start: int, end: int, statements: list[Node]) -> bytes:
    """src[start:end] with each statement (inside it, in order) replaced by the placeholder at its indentation."""
    pieces, pos = [], start
    for stmt in statements:
        pieces += [src[pos:stmt.start_byte], PLACEHOLDER.encode()]
        line_end = src.find(b"\n", stmt.end_byte, end)
        rest = src[stmt.end_byte:line_end if line_end >= 0 else end]
        pos = stmt.end_byte
        if rest.strip():  # code or a comment follows on the same line: keep it out of the // comment
            pieces.append(b"\n" + _line_indent(src, stmt.start_byte))
            pos += len(rest) - len(rest.lstrip())
    pieces.append(src[pos:end])
    return b"".join(pieces)


def mask_method(src: bytes, method: Node, statements: list[Node]) -> str:
    """Method source (dedented) with each statement replaced by the placeholder at its indentation."""
    line_start = src.rfind(b"\n", 0, method.start_byte) + 1
    start = method.start_byte if src[line_start:method.start_byte].strip() else line_start
    return textwrap.dedent(mask_span(src, start, method.end_byte, statements).decode("utf-8"))


def _uncovered_reason(calls: list[Node], statements: list[Node], method: Node) -> str | None:
    starts = [s.start_byte for s in statements]
    reason = None
    for call in calls:
        i = bisect.bisect_right(starts, call.start_byte) - 1
        if i >= 0 and call.end_byte <= statements[i].end_byte:
            continue
        node = call.parent
        while node is not None and node != method and node.type not in BOUNDARY_TYPES:
            node = node.parent
        if node is not None and node != method:
            return "assert_in_lambda_or_nested"
        reason = "assert_in_other_expression"
    return reason


def _references(index: RepoIndex, parsed: ParsedFile) -> collections.Counter:
    declared = {cls.simple_name for cls in parsed.classes}
    refs = collections.Counter()
    nodes = QueryCursor(REFERENCE_QUERY).captures(parsed.root).get("ref", [])
    for node in sorted(nodes, key=lambda n: n.start_byte):
        name = _text(node)
        if name not in declared and index.has_production_class(name):
            refs[name] += 1
    return refs


def find_focal(index: RepoIndex, parsed: ParsedFile, top_level: str, refs_cache: dict) -> tuple[str | None, str]:
    """The focal file of a test class in `index`: (path, how it was found: name / name_prefix / fallback / none)."""
    for name in focal_name_candidates(top_level):
        if path := index.find_class(name, parsed.rel_path, parsed.package_dir):
            return path, "name"
    if "refs" not in refs_cache:
        refs_cache["refs"] = _references(index, parsed)
    refs = refs_cache["refs"]
    for candidate in focal_name_candidates(top_level):
        for prefix in camel_prefixes(candidate):
            if refs[prefix] and (path := index.find_class(prefix, parsed.rel_path, parsed.package_dir)):
                return path, "name_prefix"
    if refs:
        # most referenced; ties: a name contained in the test class name, then first referenced
        best = max(refs, key=lambda n: (refs[n], n in top_level))
        return index.find_class(best, parsed.rel_path, parsed.package_dir), "fallback"
    return None, "none"


class RepoMiner:
    """Mines one repository: parse every test file once, resolve JUnit 3 classes, emit records."""

    def __init__(self, root: Path, name: str, stats: MiningStats, exclude: Iterable[str] = ()):
        self.stats = stats
        self.index = RepoIndex(root, name, exclude, stats)
        self.parser = make_parser()
        self.files: list[ParsedFile] = []
        self.superclasses: dict[str, set[str]] = collections.defaultdict(set)
        self.test_class_names: set[str] = set()
        for rel in self.index.files:
            if not is_test_path(rel):
                continue
            try:
                text = read_java(root / rel, stats)
            except OSError:
                stats.counts["unreadable_files"] += 1
                continue
            parsed = parse_test_file(self.parser, rel, text)
            stats.counts["test_files_parsed"] += 1
            stats.counts["test_files_with_parse_errors"] += parsed.root.has_error
            for cls in parsed.classes:
                self.test_class_names.add(cls.simple_name)
                if cls.superclass:
                    self.superclasses[cls.simple_name].add(cls.superclass)
            self.files.append(parsed)
        self._junit3: dict[str, bool] = {}

    def is_junit3(self, class_name: str, seen: frozenset = frozenset()) -> bool:
        """True when the class (transitively, within the repo's test classes) extends a *TestCase."""
        if class_name not in self._junit3:
            result = False
            for superclass in self.superclasses.get(class_name, ()):
                external = superclass not in self.test_class_names
                if superclass == "TestCase" or (external and superclass.endswith("TestCase")):
                    result = True
                elif superclass not in seen and self.is_junit3(superclass, seen | {class_name}):
                    result = True
            self._junit3[class_name] = result
        return self._junit3[class_name]

    def find_focal(self, parsed: ParsedFile, top_level: str, refs_cache: dict) -> tuple[str | None, str]:
        """(focal path, how it was found: name / name_prefix / fallback / none)."""
        return find_focal(self.index, parsed, top_level, refs_cache)

    def mine(self) -> Iterator[dict]:
        """Yield one record per usable test method of the repository (duplicates not yet removed)."""
        for parsed in self.files:
            names = QueryCursor(ASSERT_CALL_QUERY).captures(parsed.root).get("name", [])
            calls = sorted((n.parent for n in names), key=lambda n: n.start_byte)
            call_starts = [c.start_byte for c in calls]
            focal_cache: dict[str, tuple[str | None, str]] = {}
            refs_cache: dict = {}
            for cls in parsed.classes:
                junit3 = self.is_junit3(cls.simple_name)
                methods = [(m, kind) for m in cls.body.named_children
                           if m.type == "method_declaration" and (kind := test_kind(m, junit3))]
                if not methods:
                    continue
                self.stats.counts["test_classes"] += 1
                for method, kind in methods:
                    self.stats.counts["test_methods"] += 1
                    self.stats.counts[f"test_methods_{kind}"] += 1
                    lo = bisect.bisect_left(call_starts, method.start_byte)
                    hi = bisect.bisect_left(call_starts, method.end_byte)
                    record = self._mine_method(parsed, cls, method, calls[lo:hi], focal_cache, refs_cache)
                    if record is not None:
                        yield record

    def _mine_method(self, parsed, cls, method, calls, focal_cache, refs_cache) -> dict | None:
        body = method.child_by_field_name("body")
        if method.has_error:
            return self._skip("parse_error")
        if body is None:
            return self._skip("no_body")
        statements = assertion_statements(body)
        reason = _uncovered_reason(calls, statements, method)
        if reason:
            return self._skip(reason)
        if not statements:
            return self._skip("no_assertions")
        if cls.top_level not in focal_cache:
            focal_cache[cls.top_level] = self.find_focal(parsed, cls.top_level, refs_cache)
        focal_path, how = focal_cache[cls.top_level]
        if focal_path is None:
            return self._skip("no_focal")
        return {
            "focal_file": self.index.focal_text(focal_path),
            "test_method_masked": mask_method(parsed.src, method, statements),
            "assertions": [one_line(_text(s)) for s in statements],
            "repo": self.index.name,
            "test_path": parsed.rel_path,
            "focal_path": focal_path,
            "test_class": cls.name,
            "test_method": _text(method.child_by_field_name("name")),
            "focal_match": how,
        }

    def _skip(self, reason: str) -> None:
        self.stats.skips[reason] += 1
        return None


def mine_repos(repos: list[tuple[str, Path]], stats: MiningStats, exclude: Iterable[str] = ()) -> Iterator[dict]:
    """Mine (name, root) repositories in order, dropping exact duplicates (counted)."""
    exclude = list(exclude)
    seen: set[bytes] = set()
    for name, root in repos:
        stats.counts["repos"] += 1
        for record in RepoMiner(root, name, stats, exclude).mine():
            # exact duplicate = same focal_path + masked method + assertions (within one repo)
            key = "\0".join([record["repo"], record["focal_path"], record["test_method_masked"],
                             *record["assertions"]])
            digest = hashlib.sha1(key.encode("utf-8")).digest()
            if digest in seen:
                stats.skips["duplicate"] += 1
                continue
            seen.add(digest)
            stats.counts["samples_written"] += 1
            stats.counts[f"focal_by_{record['focal_match']}"] += 1
            yield record


def split_key(record: dict, split_by: str) -> str:
    """Group key for splitting: the repo, or repo + test path below its test dir (one test file)."""
    if split_by == "repo":
        return record["repo"]
    return record["repo"] + "/" + test_group_path(record["test_path"])


def split_records(records: list[dict], val_fraction: float, seed: int,
                  split_by: str = "file") -> tuple[list, list]:
    """Deterministic group split: groups in seeded-hash order fill validation up to val_fraction.

    A group (one test file, or one repo) is never divided; a group that would overshoot the target is
    passed over for the next one. If every group overshoots, the smallest one becomes validation.
    """
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for i, record in enumerate(records):
        groups[split_key(record, split_by)].append(i)
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}\0{k}".encode()).hexdigest())
    target = round(val_fraction * len(records))
    val_keys, val_size = set(), 0
    for key in order:
        if val_size + len(groups[key]) <= target:
            val_keys.add(key)
            val_size += len(groups[key])
    if not val_keys and target > 0 and len(order) > 1:  # every group is bigger than the target
        val_keys.add(min(order, key=lambda k: len(groups[k])))
    train = [r for r in records if split_key(r, split_by) not in val_keys]
    val = [r for r in records if split_key(r, split_by) in val_keys]
    return train, val
