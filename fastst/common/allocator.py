"""Keep freed CPU memory inside the process (glibc), so big tensors are not page-faulted in every step.

glibc serves every allocation above its mmap threshold (at most 32 MB; a 4 x 64 x 256 x 256 fp32
activation is 64 MB) with a fresh ``mmap`` and hands it back to the kernel on ``free``. A training
step allocates and frees the same large activations every time, so each step faults all of them in
again, page by page: millions of minor page faults in a few steps on the CPU, about 15% of a fastst
step on a 2-core machine. ``keep_freed_memory`` turns that off with ``mallopt``: large blocks come
from the heap and freed memory stays in it for the next step (in the main thread's arena, where the
training loop and inference allocate; glibc's per-thread arenas still map blocks above 64 MB). The
resident memory then stays at its peak until the process ends, which a training run reaches in its
first steps anyway. The same can be had from the environment before Python starts
(``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``) or with jemalloc/tcmalloc preloaded.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: keep up to 2 GiB of free heap top

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True if it took effect (Linux with glibc).

    Idempotent; a no-op returning False on other C libraries (musl), macOS and Windows. With jemalloc
    or tcmalloc preloaded it returns True but changes nothing (they do not reuse glibc's settings).
    """
    if "applied" in _state:
        return _state["applied"]
    applied = False
    if sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):  # not glibc
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            # mallopt returns 1 on success
            applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not applied:
        log.debug("speed.keep_freed_memory: not a glibc system, left the allocator as it is")
    _state["applied"] = applied
    return applied


def active() -> bool:
    """Whether ``keep_freed_memory`` has taken effect in this process."""
    return _state.get("applied", False)
