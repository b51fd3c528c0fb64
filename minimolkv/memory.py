"""Keep freed memory in the process: no page-fault storm in every train step.

A train step allocates ~80 MB of temporaries (activations, gradients) and
frees them again. glibc's malloc serves blocks above its mmap threshold
(128 KiB at first, adapted upwards to at most 32 MiB) with fresh mmap()s and
hands them back to the operating system on free(); the next step's pages are
then new to the process, and touching each costs a minor page fault (~5 us
each; ~20,000 per MoLKV step, about 45 % of its time). Raising the mmap
threshold and the trim threshold keeps those blocks in malloc's heap, reused
from step to step: zero faults, the same memory.

Harmless elsewhere: on macOS, Windows or a non-glibc Linux (musl) this does
nothing. Called by train.train, the benchmark and the command line.
"""

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1          # from <malloc.h>: free memory above this at the heap top goes back to the OS
M_MMAP_THRESHOLD = -3          # blocks at least this big get their own mmap (given back on free)
MMAP_THRESHOLD = 32 * 2**20    # 32 MiB: every temporary of a train step stays in the heap
TRIM_THRESHOLD = 1 * 2**30     # give memory back only when 1 GiB lies free at the heap top

_done = False


def keep_freed_memory():
    """Set glibc's mmap and trim thresholds once per process; True if it took effect."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
