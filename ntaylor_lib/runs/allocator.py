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

The Taylor solves are the exception (:func:`large_blocks_mapped`): they allocate blocks of
hundreds of MB (a group's stacked Grams) between many small arrays, and a heap that is
never trimmed and serves everything cannot reuse a freed large block once a small array
sits in its hole, so it grew by about a gigabyte every half minute of the paper-scale
autoencoder's solve until the process ran out of memory. There, blocks of
:data:`LARGE_BLOCK` and more are mapped, and unmapped when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536  # glibc's default
#: Blocks at least this large are mapped inside :func:`large_blocks_mapped` (glibc's largest threshold).
LARGE_BLOCK = 32 * 2**20
_applied = False
_mallopt = None
_depth = 0  # open large_blocks_mapped blocks


def retain_freed_memory() -> bool:
    """Ask glibc's malloc never to ``mmap`` blocks nor trim the heap. Idempotent.

    Returns:
        True when the setting is in force (glibc on Linux); False elsewhere, where it does nothing.
    """
    global _applied, _mallopt
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
    _mallopt = mallopt if _applied else None
    return _applied


@contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """Within the block, serve allocations of :data:`LARGE_BLOCK` bytes and more by ``mmap`` (returned
    to the OS when freed), where :func:`retain_freed_memory` is in force; elsewhere it does nothing.
    Nested blocks are allowed: the outermost one restores the setting."""
    global _depth
    if _mallopt is None:
        yield
        return
    if _depth == 0:
        _mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK)
        _mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            _mallopt(_M_MMAP_MAX, 0)


__all__ = ["LARGE_BLOCK", "large_blocks_mapped", "retain_freed_memory"]
