"""Peak resident memory of this process, as the benchmarks that measure memory read it.

Linux's ``/proc/self/status`` gives the current (VmRSS) and peak (VmHWM)
resident sizes, and writing 5 to ``/proc/self/clear_refs`` resets the peak
to the current size, so one call's growth can be read in a process that has
already run other work. Off Linux, ``ru_maxrss`` (never reset) stands in.
"""

from __future__ import annotations

import math
import resource
from pathlib import Path


def status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's peak-RSS mark (VmHWM) to its current RSS, where the kernel allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """The peak RSS since the last reset (or since the start) in MiB."""
    peak = status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def available_mib() -> float:
    """MemAvailable in MiB; infinite where the kernel does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.inf
