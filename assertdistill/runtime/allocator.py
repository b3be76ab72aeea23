"""Keep freed memory for reuse instead of handing it back to the kernel after every large allocation.

glibc's malloc serves blocks above its mmap threshold (128 KiB at start, adapting up to 32 MiB) with
fresh mmap() calls and unmaps them on free, so every large buffer - an inflated 33 MB JSON line, a
16 MB block of teacher codes, each training step's activations - is faulted in page by page again.
Where page faults are expensive (virtual machines, sandboxes) that dominates: decoding one 8-bit
teacher block took 36 ms with the defaults and 14 ms with this module on this project's machine.
Raising the thresholds keeps those pages mapped and reuses them: a CodeT5-small training step ran 1.6x
faster. The price is heap fragmentation: peak RSS can rise where activations dominate (a 2+2-layer
tiny student at batch 8 on 1024-token sources: 2.2 GB against 1.95 GB untuned). Set
ASSERTDISTILL_MALLOC_TUNING=0 to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
M_MMAP_THRESHOLD = -3
# Blocks below 256 MiB (a CodeT5-small attention map at batch 4 is 128 MiB) come from the heap and are reused.
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 256 << 20  # free memory at the heap top kept up to 256 MiB
FALLBACK_MMAP_THRESHOLD_BYTES = 32 << 20  # the largest value older glibc accepts

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc malloc to reuse freed large blocks (once per process); False where not applicable."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("ASSERTDISTILL_MALLOC_TUNING", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, static builds)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 or \
        mallopt(M_MMAP_THRESHOLD, FALLBACK_MMAP_THRESHOLD_BYTES) == 1
    _applied = mmap_ok and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return _applied
