"""The allocator setting: freed memory kept in the process, except the large blocks of a solve."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import torch
    from ntaylor_lib.runs.allocator import large_blocks_mapped, retain_freed_memory
    if not retain_freed_memory():
        print("unsupported")
        raise SystemExit
    def rss():
        return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
    def kept_after_free():  # MB still resident after a 200 MB block is written and freed
        base = rss()
        big = torch.ones(200 * 2**20 // 8, dtype=torch.float64)
        del big
        return rss() - base
    outside = kept_after_free()
    with large_blocks_mapped():
        inside = kept_after_free()
    print(f"{outside:.0f} {inside:.0f}")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_solve_returns_its_large_blocks_where_the_heap_keeps_them():
    """Under retain_freed_memory a freed large block stays in the process (the heap is never trimmed,
    and a block left behind a small array is never reused: the paper-scale solve ran out of memory
    so); inside large_blocks_mapped it is mapped, and goes back to the OS when freed."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout.split()
    if out == ["unsupported"]:
        pytest.skip("no mallopt in this libc")
    outside, inside = map(float, out)
    assert outside > 150
    assert inside < 20
