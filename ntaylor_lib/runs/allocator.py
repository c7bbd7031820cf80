"""Keep freed memory in the process instead of returning it to the OS (glibc's malloc).

By default glibc serves large blocks (above a threshold that grows to 32 MB) with
``mmap`` and trims the top of the heap when it is freed, so a hot loop that allocates
and frees tensors of some MB pays the kernel's page faults on every pass: about
0.4 ms per MB on the 2-core machines this project is measured on, which is as much as the
arithmetic of a whole-layer Jacobian (a 33 MB result).
:func:`retain_freed_memory` serves every block from the heap and never trims it, the
setting PyTorch's CPU performance guides reach with jemalloc or tcmalloc. The price is
that the process keeps its peak heap until it exits.

The command line, the book's pages and the benchmarks call it once at start; a
library user calls it (or not) in their own process. The benchmarks call it before
timing the fast paths and their baselines alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_MAX = -4
_applied = False


def retain_freed_memory() -> bool:
    """Ask glibc's malloc never to ``mmap`` blocks nor trim the heap. Idempotent.

    Returns:
        True when the setting is in force (glibc on Linux); False elsewhere, where it does nothing.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the trim threshold's int bound (2 GiB) is ample
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied


__all__ = ["retain_freed_memory"]
