"""One run per output directory at a time: an advisory lock that the OS drops when its process dies."""

from __future__ import annotations

import datetime
import errno
import os
import socket
import warnings
from contextlib import contextmanager
from typing import Iterator

from ..core.schema import LOCK_FILENAME

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; runs go unlocked there
    fcntl = None

# LOCK_FILENAME is hidden, and never taken for output: a dir holding only the lock holds no finished run
# (sweep.sh and prepare_output_dir look for distillation_summary.json and checkpoints/), and
# --overwrite_output_dir keeps it.
# flock errors of filesystems that cannot lock (Lustre without -o flock, NFS without lockd): run unlocked.
_CANNOT_LOCK = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


class OutputDirBusyError(OSError):
    """Another live run holds the output directory's lock."""


class OutputDirLock:
    """An exclusive flock on <output_dir>/.run.lock; released by release(), or by the OS when the process dies.

    The lock file is left in place (unlinking a lock file lets a third run lock a fresh inode while a
    second still waits on the old one); what it holds, "pid N on HOST since TIME", only names the holder.
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_FILENAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create the output dir if needed and take the lock; OutputDirBusyError when another run holds it."""
        try:
            os.makedirs(self.output_dir, exist_ok=True)
        except OSError as error:
            raise OSError(f"cannot create output dir {self.output_dir}: {error.strerror}") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise OSError(f"output dir {self.output_dir} is not writable ({error.strerror})") from None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputDirBusyError(f"{self.output_dir} is in use by another run{f' ({holder})' if holder else ''}; "
                                     f"wait for it to end or choose another --output_dir") from None
        except OSError as error:
            if error.errno not in _CANNOT_LOCK:
                os.close(fd)
                raise OSError(f"cannot lock {self.path}: {error.strerror}") from None
            warnings.warn(f"{self.path}: this filesystem cannot lock files ({error.strerror}); a second run "
                          f"started into {self.output_dir} meanwhile would not be stopped", RuntimeWarning)
        self._fd = fd
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)
        except OSError as error:  # the line only names the holder: a full disk is the run's to report
            warnings.warn(f"{self.path}: cannot record this run as the holder ({error.strerror})", RuntimeWarning)

    def release(self) -> None:
        """Drop the lock (closing the file drops it); the file stays."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """The holder's line of a lock file ("" when unreadable or not yet written)."""
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


@contextmanager
def output_dir_lock(output_dir: str, context=None) -> Iterator[None]:
    """Hold output_dir's lock in the main process while the block runs; with torchrun every rank refuses alike.

    `context` is a DistributedContext (None: one process). Rank 0 takes the lock and tells the other
    ranks whether it got it, so a refused torchrun ends in one line from every rank, not a hang.
    """
    is_main = context is None or context.is_main
    lock, refusal = OutputDirLock(output_dir), None
    if is_main:
        try:
            lock.acquire()
        except OSError as error:
            refusal = error
    if context is not None and context.enabled:
        message = context.gather(None if refusal is None else str(refusal))[0]
        if message is not None and refusal is None:
            refusal = OutputDirBusyError(message)
    if refusal is not None:
        raise refusal
    try:
        yield
    finally:
        lock.release()
