"""What every benchmark measures with: medians, wall times with the device synchronised, memory, CPU load.

Shared by ``fastst bench`` (training and inference rows), ``fastst bench deploy`` and the serve
benchmark, so that a number means the same in each table.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastst.errors import first_line


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values (a row whose every call failed)."""
    return float(statistics.median(values)) if values else None


def process_memory(pid: int | str = "self") -> dict[str, int]:
    """Bytes of a process's resident set now (``VmRSS``) and at its peak (``VmHWM``), from /proc (Linux).

    Empty where /proc is missing: the benchmarks then report memory as not measured.
    """
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024  # kB
    return out


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size so far (``ru_maxrss``), or None."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def sync(device: str) -> None:
    """Wait for the device's queued work, so that a wall-clock time covers it (CUDA runs asynchronously)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed_call(device: str, fn: Callable[[Any], Any], x: Any) -> tuple[Any, float]:
    """``fn(x)`` and its wall time in seconds, with the device's queued work finished on both sides.

    The inference table needs each call's output (for the max abs difference to fp32) and times the
    first call of each option on its own (compile time), which ``torch.utils.benchmark.Timer`` does
    not give; the eager baseline row, which needs neither, is timed with ``Timer``.
    """
    sync(device)
    t0 = time.perf_counter()
    y = fn(x)
    sync(device)
    return y, time.perf_counter() - t0


def error_line(e: BaseException, limit: int = 300) -> str:
    """A failed row's note: the exception's class and first line, short enough for a table cell."""
    return f"{type(e).__name__}: {first_line(e)}"[:limit]


BUSY_FRACTION = 0.10  # other processes using more than this share of all CPUs during a measurement: flagged


def cpu_counters() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process, wall time), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return (sum(fields[:8]) - idle) / tick, own.user + own.system, time.perf_counter()


def foreign_cpu(start: tuple[float, float, float] | None, end: tuple[float, float, float] | None) -> float | None:
    """Share of all CPUs that other processes used between two :func:`cpu_counters` samples.

    Another process on the benchmark's cores slows every measurement down (with 2 OMP threads on 2
    cores, a third busy process can triple a step), so rows measured while this is high are flagged.
    The data loader's worker processes count as "other" (a few percent when decoding JPEGs).
    """
    if start is None or end is None or end[2] <= start[2]:
        return None
    machine, own, wall = (e - s for s, e in zip(start, end))
    return round(max(0.0, (machine - own) / (wall * (os.cpu_count() or 1))), 3)


def busy_note(fraction: float | None) -> str:
    """The table note of a row measured while other processes used the CPUs (see :func:`foreign_cpu`)."""
    return f"busy: others used {fraction:.0%} of the CPUs" if fraction is not None and fraction > BUSY_FRACTION else ""


def cpu_name() -> str:
    """The CPU's model name for the report header (Linux /proc/cpuinfo, else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def progress(message: str) -> None:
    """A time-stamped progress line on stderr (a full run takes half an hour; stdout holds the report)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
