"""The operating system's walls around every JVM that compiles or runs model-written code (bubblewrap + rlimits).

What a process started through `Sandbox.popen` is guaranteed (Linux with bubblewrap and user namespaces;
tests/test_sandbox.py tries each wall from inside a JVM):
- It runs as an unprivileged user with no capabilities and no_new_privs (a setuid program gains nothing):
  uid/gid 65534 (nobody) when this tool runs as root (bubblewrap sets up the mounts, then setpriv drops to
  nobody, so the kernel's per-user process limit applies), else the caller's own uid in a user namespace.
- It sees only: /usr (the JDK and /usr/share/java's jars), the JDK's configuration files that /usr links to
  in /etc, /etc/localtime and /etc/timezone, a private /proc, a minimal /dev, an empty private /tmp, and
  the paths it is given - read-only, except the `writable` ones (its scratch and class output
  directories). Nothing else of the file system exists in it: no /root, /home, /work, other candidates.
- It has no network (a new network namespace with only its own loopback), and its own PID, IPC and UTS
  namespaces: it cannot see or signal other processes.
- It dies with its parent (`--die-with-parent`), in its own session (no terminal injection).
- Limits (prlimit, inherited by every thread and child): address space, processes/threads (counted per
  uid, so enforced only where it runs as nobody, i.e. when this tool runs as root), file size, CPU
  seconds, no core dumps.
What it does not guarantee: that the JVM inside behaves (a candidate can still loop, allocate up to the
limit, or corrupt its own scratch and class directories); wall-clock limits are the caller's (jvm.py kills
the process). Without bubblewrap or user namespaces `check()` raises SandboxUnavailable; the tool then
refuses to run candidates unless told --unsafe_no_sandbox, where `Sandbox(None)` runs commands as they are.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534  # uid and gid of `nobody` on Debian and most Linux systems
BWRAP = "bwrap"
PRLIMIT = "prlimit"
SETPRIV = "setpriv"
SYSTEM_READ_ONLY = "/usr"  # the JDK, the JUnit jars and the shared libraries they load
ETC_FILES = ("/etc/localtime", "/etc/timezone")  # the same default TimeZone inside as outside
ROOT_LINKS = (("usr/bin", "/bin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"), ("usr/sbin", "/sbin"))
KEPT_ENVIRONMENT = ("LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LC_NUMERIC", "LC_TIME", "TZ")  # same default Locale
GIB = 1 << 30


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot start a sandbox here; the message says why in one line."""


@dataclass(frozen=True)
class SandboxLimits:
    """rlimits of one sandboxed process tree."""

    address_space_bytes: int = 6 * GIB  # a JVM reserves about heap + 2.5 GiB of address space
    processes: int = 512  # tasks of the sandbox's uid (a JVM starts 20-40 threads)
    file_bytes: int = 256 << 20  # largest file it may write
    cpu_seconds: int = 600  # CPU time of the whole process (all threads)

    def prlimit_arguments(self) -> list[str]:
        """The prlimit(1) options setting these limits (soft = hard)."""
        return [f"--as={self.address_space_bytes}", f"--nproc={self.processes}", f"--fsize={self.file_bytes}",
                f"--cpu={self.cpu_seconds}", "--core=0"]


def heap_bytes(heap: str) -> int:
    """Bytes of a JVM -Xmx value such as '2g', '512m' or '1048576'."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": GIB, "t": 1 << 40}
    text = heap.strip().lower()
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


@functools.cache
def jdk_links_outside_usr(java: str) -> tuple[str, ...]:
    """Files outside /usr that the JDK of `java` links to (Debian keeps its conf/ and cacerts in /etc)."""
    home = Path(java).resolve().parents[1]
    targets = set()
    for directory, _, names in os.walk(home):
        for name in names:
            path = Path(directory) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to("/usr") and target.exists():
                    targets.add(str(target))
    return tuple(sorted(targets))


class Sandbox:
    """Starts commands inside bubblewrap with rlimits; `Sandbox(None)` starts them unconfined (--unsafe_no_sandbox)."""

    def __init__(self, limits: SandboxLimits | None):
        self.limits = limits
        self.as_nobody = os.geteuid() == 0

    @property
    def enabled(self) -> bool:
        """Whether commands run confined."""
        return self.limits is not None

    def check(self) -> None:
        """Start `true` in the sandbox once; SandboxUnavailable (one line) when it cannot start."""
        if not self.enabled:
            return
        for tool in (BWRAP, PRLIMIT, *([SETPRIV] if self.as_nobody else [])):
            if shutil.which(tool) is None:
                raise SandboxUnavailable(f"{tool} is not installed (Debian: apt-get install bubblewrap util-linux)")
        try:
            done = self.run([shutil.which("true") or "/usr/bin/true"], read_only=[], writable=[], cwd=Path("/"), timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SandboxUnavailable(f"bubblewrap could not start a sandbox: {error}") from error
        if done.returncode != 0:
            why = (done.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            raise SandboxUnavailable(f"bubblewrap could not start a sandbox: {why[0] if why else done.returncode}")

    def prepare_writable(self, directory: Path) -> Path:
        """Create a directory the sandboxed user can write (owned by nobody when this tool runs as root)."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.enabled and self.as_nobody:
            os.chown(directory, NOBODY, NOBODY)
        return directory

    def _command(self, command: list[str], read_only: list[Path], writable: list[Path], cwd: Path) -> list[str]:
        arguments = [PRLIMIT, *self.limits.prlimit_arguments(), "--", BWRAP]
        if self.as_nobody:  # bubblewrap as root sets up the mounts, setpriv below drops to nobody
            arguments += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        else:  # unprivileged: bubblewrap needs a user namespace, and drops every capability in it
            arguments += ["--unshare-all", "--cap-drop", "ALL"]
        arguments += ["--die-with-parent", "--new-session", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                      "--setenv", "HOME", "/tmp"]
        for name in KEPT_ENVIRONMENT:
            if name in os.environ:
                arguments += ["--setenv", name, os.environ[name]]
        mounted, made = [Path(p) for p in (SYSTEM_READ_ONLY, "/proc", "/dev")], {Path("/tmp")}
        arguments += ["--ro-bind", SYSTEM_READ_ONLY, SYSTEM_READ_ONLY]
        for target, link in ROOT_LINKS:
            if Path("/" + target).is_dir():
                arguments += ["--symlink", target, link]
        arguments += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        jdk_files = jdk_links_outside_usr(command[0]) if Path(command[0]).name in ("java", "javac") else ()
        binds = [("--ro-bind", Path(p)) for p in (*jdk_files, *ETC_FILES) if Path(p).exists()]
        binds += [("--ro-bind", Path(p).absolute()) for p in read_only]
        binds += [("--bind", Path(p).absolute()) for p in writable]
        for option, path in sorted(binds, key=lambda bind: len(bind[1].parts)):  # outer mounts before inner ones
            for parent in reversed(path.parents[:-1]):  # bubblewrap would make missing parents 0700 (root's)
                if parent not in made and not any(parent.is_relative_to(m) for m in mounted):
                    arguments += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            arguments += [option, str(path), str(path)]
            mounted.append(path)
        arguments += ["--chdir", str(cwd), "--"]
        if self.as_nobody:
            arguments += [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs",
                          "--inh-caps=-all", "--bounding-set=-all", "--"]
        return [*arguments, *command]

    def popen(self, command: list[str], read_only: list[Path], writable: list[Path], cwd: Path,
              **popen_arguments) -> subprocess.Popen:
        """subprocess.Popen of `command` in the sandbox: `read_only` and `writable` paths visible at their own paths."""
        if not self.enabled:
            return subprocess.Popen(command, cwd=cwd, **popen_arguments)
        visible = [p for p in read_only if Path(p).exists()]
        return subprocess.Popen(self._command(command, visible, writable, cwd), cwd="/", **popen_arguments)

    def run(self, command: list[str], read_only: list[Path], writable: list[Path], cwd: Path,
            timeout: float) -> subprocess.CompletedProcess:
        """Run `command` in the sandbox to its end (bytes output); subprocess.TimeoutExpired after `timeout` s."""
        with self.popen(command, read_only, writable, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def sandbox_for(heap: str, unsafe: bool) -> Sandbox:
    """The sandbox for candidate JVMs of this -Xmx, checked; Sandbox(None) when unsafe; SandboxUnavailable."""
    if unsafe:
        return Sandbox(None)
    sandbox = Sandbox(SandboxLimits(address_space_bytes=heap_bytes(heap) + 4 * GIB))
    sandbox.check()
    return sandbox
