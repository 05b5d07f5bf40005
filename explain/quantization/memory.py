"""This process's memory: resident now and its high-water mark (Linux /proc/self/status, else psutil/resource)."""

from __future__ import annotations

import resource
import sys


def process_memory() -> dict:
    """{"rss_bytes", "peak_rss_bytes", "source"}: VmRSS and VmHWM where Linux gives them. VmHWM, not getrusage's
    ru_maxrss, because Linux keeps ru_maxrss across fork and exec (a child would report its parent's peak)."""
    values = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    values[line.split(":")[0]] = int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    if "VmRSS" in values and "VmHWM" in values:
        return {"rss_bytes": values["VmRSS"], "peak_rss_bytes": values["VmHWM"], "source": "/proc/self/status"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    try:
        import psutil

        rss = psutil.Process().memory_info().rss
    except ImportError:
        rss = None
    return {"rss_bytes": rss, "peak_rss_bytes": peak, "source": "psutil / getrusage"}


def release_freed_memory() -> bool:
    """Hand memory that Python and torch have freed back to the operating system (glibc's malloc_trim).

    Loading makes many short-lived arrays (a GGUF file's parsed metadata, one tensor's conversion after another);
    glibc keeps their freed pages for reuse, so the process stays ~150 MB larger than what it holds. Returns False
    where there is no glibc (macOS, Windows, musl), which changes nothing but the resident size."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
