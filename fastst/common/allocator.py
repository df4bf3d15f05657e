"""Keep freed CPU memory inside the process (glibc), so big tensors are not page-faulted in every step;
and back the heap with huge pages for a short command (:func:`huge_page_heap`, below).

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
import threading

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


# -- huge pages ---------------------------------------------------------------------------------------
# A one-photo `fastst stylize` touches most of its memory once: the ONNX Runtime sessions' packed weights
# and the net's activations come from fresh pages, faulted in 4 KiB at a time (86,000 minor faults for the
# whole process at 1024 px; the stylize graph's first run 0.19 s against 0.14 s on 2 MiB pages). Where the
# kernel gives transparent huge pages to memory that asks for them (/sys/kernel/mm/transparent_hugepage/enabled
# = [madvise], the common default), asking for them leaves 14,000 faults and the run 0.07 s shorter (0.52 s ->
# 0.45 s; docs/deploy.md, "Huge pages"). glibc asks only when started with GLIBC_TUNABLES=glibc.malloc.hugetlb=1,
# so ``huge_page_heap`` does it itself: with ``keep_freed_memory`` every large block comes from the heap
# and stays there when freed, so it grows the heap once by ``size`` (address space: nothing is touched),
# marks that range MADV_HUGEPAGE and frees it for the allocations that follow.
MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux
HUGE_PAGE = 2 << 20
HEAP_SIZE = 1 << 30  # what huge_page_heap reserves by default; memory beyond it comes in 4 KiB pages
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_ENABLED) -> str:
    """The kernel's transparent huge page mode: always, madvise or never ('' where it cannot be read)."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else ""


def huge_page_heap(size: int = HEAP_SIZE) -> bool:
    """Make the next ``size`` bytes of the heap huge-page backed (see above); True if it took effect.

    Needs glibc on Linux (:func:`keep_freed_memory` applies first) and the main thread (whose heap the advice
    is on). Pages are committed as they are touched, 2 MiB at a time. Call it before the big allocations (before
    loading a model). Idempotent."""
    if "huge" in _state:
        return _state["huge"]
    if threading.current_thread() is not threading.main_thread():
        return False  # another thread's malloc arena maps (and unmaps) 1 GiB on its own: the advice would be lost
    applied = False
    if thp_mode() in ("madvise", "always") and keep_freed_memory():
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.free.restype, libc.free.argtypes = None, [ctypes.c_void_p]
        libc.madvise.restype, libc.madvise.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        block = libc.malloc(size)
        if block:
            start = -(-block // HUGE_PAGE) * HUGE_PAGE  # the whole 2 MiB pages inside the block
            length = (block + size - start) // HUGE_PAGE * HUGE_PAGE
            applied = length > 0 and libc.madvise(start, length, MADV_HUGEPAGE) == 0
            libc.free(block)  # back to the heap (keep_freed_memory: not to the kernel), advice and all
    if not applied:
        log.debug("huge_page_heap: not applied (not glibc, no transparent huge pages, or the advice was refused)")
    _state["huge"] = applied
    return applied
