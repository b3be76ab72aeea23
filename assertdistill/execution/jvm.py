"""A JVM (java/AssertionRunner.java) that compiles sources and runs single test methods on request, in a sandbox."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .sandbox import Sandbox

RUNNER_SOURCE = Path(__file__).resolve().parent / "java" / "AssertionRunner.java"
RUNNER_CLASS = "AssertionRunner"
JUNIT_PLATFORM_JAR = "junit-platform-console-standalone.jar"  # JUnit 5 platform + Jupiter + Vintage (3 and 4)
JUNIT_JARS = (JUNIT_PLATFORM_JAR, "junit4.jar", "hamcrest.jar")  # in /usr/share/java (Debian junit5, junit4, ...)
DEBIAN_JAVA_DIR = Path("/usr/share/java")
JVM_LOG_FILENAME = "jvm.log"  # beside the scratch directory: what the JVM itself wrote to stderr
REPLY_GRACE_SECONDS = 30.0  # added to a run's timeout before the JVM counts as hung
JVM_OPTIONS = ("-Djava.security.manager=allow", "-Xss4m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-XX:-UsePerfData")  # no hsperfdata file in /tmp

# Outcomes a run request answers with (AssertionRunner's words).
PASSED, ASSERTION_FAILED, OTHER_EXCEPTION, SYSTEM_EXIT, TIMEOUT, NOT_FOUND = (
    "passed", "assertion_failed", "other_exception", "system_exit", "timeout", "not_found")
COMPILED, COMPILE_ERROR, COMPILE_TIMEOUT = "compiled", "compile_error", "compile_timeout"
JVM_DIED = "jvm_died"  # the JVM ended without answering (crash, out of memory, a halt the sandbox missed)


class JavaUnavailable(RuntimeError):
    """No JDK or no JUnit jars here; the message says what is missing and how to install it."""


@dataclass(frozen=True)
class Reply:
    """One answer of the JVM: the outcome word and its detail text."""

    outcome: str
    detail: str
    left_behind: str = ""  # JVM-wide state the run changed (Locale, properties, threads, ...); "" when none


def find_java_tools() -> tuple[str, str]:
    """(java, javac) paths; JavaUnavailable when either is missing."""
    java, javac = shutil.which("java"), shutil.which("javac")
    if not java or not javac:
        raise JavaUnavailable("no JDK: `java` and `javac` must be on PATH "
                              "(Debian: apt-get install -y openjdk-17-jdk-headless)")
    return str(Path(java).resolve()), str(Path(javac).resolve())  # the sandbox has /usr, not /etc/alternatives


def junit_jars(java_dir: Path = DEBIAN_JAVA_DIR) -> list[str]:
    """The JUnit jars the runner needs; JavaUnavailable naming the missing ones and their packages."""
    missing = [name for name in JUNIT_JARS if not (java_dir / name).is_file()]
    if missing:
        raise JavaUnavailable(f"missing {', '.join(missing)} in {java_dir} "
                              "(Debian: apt-get install -y junit5 junit4 libhamcrest-java)")
    return [str(java_dir / name) for name in JUNIT_JARS]


def build_runner(out_dir: Path) -> Path:
    """Compile AssertionRunner.java into out_dir/<hash of its source> (once); returns that directory."""
    _, javac = find_java_tools()
    out_dir = out_dir / hashlib.sha256(RUNNER_SOURCE.read_bytes()).hexdigest()[:12]
    if (out_dir / f"{RUNNER_CLASS}.class").is_file():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([javac, "-nowarn", "-d", str(out_dir), "-cp", os.pathsep.join(junit_jars()),
                           str(RUNNER_SOURCE)], capture_output=True, text=True)
    if done.returncode != 0:
        raise JavaUnavailable(f"cannot compile {RUNNER_SOURCE.name}: {done.stderr.strip()[:500]}")
    return out_dir


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", errors="replace")


@dataclass
class JvmMounts:
    """What a sandboxed JVM sees besides /usr: paths read-only and paths writable (scratch, class output)."""

    read_only: list[Path]
    writable: list[Path]


class Jvm:
    """A runner JVM with a fixed class path (JUnit + the project's jars), in `sandbox` (none: unconfined).

    Started on the first request; restarted after it dies or times out, and after `close()`.
    """

    def __init__(self, runner_dir: Path, jars: list[str], cwd: Path, scratch: Path, heap: str = "2g",
                 sandbox: Sandbox | None = None, mounts: JvmMounts | None = None):
        self.command = [find_java_tools()[0], f"-Xmx{heap}", *JVM_OPTIONS, f"-Djava.io.tmpdir={scratch}",
                        "-cp", os.pathsep.join([str(runner_dir), *junit_jars(), *jars]), RUNNER_CLASS]
        self.cwd, self.scratch = cwd, scratch
        self.sandbox = sandbox or Sandbox(None)
        self.mounts = mounts or JvmMounts([], [])
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self._next_id = 0

    def _start(self) -> None:
        self.sandbox.prepare_writable(self.scratch)
        with open(self.scratch.parent / JVM_LOG_FILENAME, "a", encoding="utf-8") as log:  # the JVM's own errors
            self.process = self.sandbox.popen(self.command, self.mounts.read_only, [*self.mounts.writable, self.scratch],
                                              self.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                              text=True, encoding="utf-8")
        self.starts += 1
        first = self.process.stdout.readline().strip()
        if first != "ready":
            self.close()
            raise JavaUnavailable(f"the runner JVM did not start ({' '.join(self.command[:3])} ...): {first!r}; "
                                  f"see {self.scratch.parent / JVM_LOG_FILENAME}")

    def _request(self, fields: list[str], wait_seconds: float) -> Reply:
        if self.process is None or self.process.poll() is not None:
            self._start()
        self._next_id += 1
        request_id = str(self._next_id)
        expired = threading.Event()

        def expire(process=self.process):
            expired.set()
            process.kill()
        timer = threading.Timer(wait_seconds, expire)
        timer.start()
        try:
            self.process.stdin.write("\t".join([fields[0], request_id, *fields[1:]]) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        finally:
            timer.cancel()
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 4 or parts[0] != request_id:
            self.close()
            if expired.is_set():
                return Reply(TIMEOUT, f"no answer within {wait_seconds:g} s: the JVM was killed")
            return Reply(JVM_DIED, f"the runner JVM ended without an answer ({line[:200]!r})")
        reply = Reply(parts[1], _unb64(parts[2]), _unb64(parts[3]))
        if reply.outcome == TIMEOUT:
            self.close()  # it halts itself after a timeout; reap it
        return reply

    def compile(self, javac_arguments: list[str], wait_seconds: float = 600.0) -> Reply:
        """javac in the JVM with these arguments; Reply compiled, compile_error or compile_timeout (JVM killed)."""
        reply = self._request(["compile", _b64("\0".join(javac_arguments))], wait_seconds)
        return Reply(COMPILE_TIMEOUT, reply.detail) if reply.outcome == TIMEOUT else reply

    def run_test(self, class_path: list[Path], class_name: str, method: str, timeout_seconds: float) -> Reply:
        """Run one test method alone in a fresh class loader over class_path; Reply with a run outcome."""
        entries = _b64("\0".join(str(entry) for entry in class_path))
        return self._request(["run", str(int(timeout_seconds * 1000)), entries, class_name, method, str(self.scratch)],
                             timeout_seconds + REPLY_GRACE_SECONDS)

    def close(self) -> None:
        """End the JVM (if running)."""
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    self.process.stdin.close()
                except OSError:
                    pass
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self.process = None
