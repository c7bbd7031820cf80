"""The allocator setting: freed memory kept in the process, except the large blocks of a solve."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
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
    mode = sys.argv[1]  # one measurement per process: a freed block left in the heap would serve the next
    if mode == "outside":
        kept = kept_after_free()
    elif mode == "inside":
        with large_blocks_mapped():
            kept = kept_after_free()
    else:
        with large_blocks_mapped():
            with large_blocks_mapped():  # a nested block (a solve inside a solve) ...
                pass
            kept = kept_after_free()  # ... leaves the outer one in force
    print(f"{kept:.0f}")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_solve_returns_its_large_blocks_where_the_heap_keeps_them():
    """Under retain_freed_memory a freed large block stays in the process (the heap is never trimmed,
    and a block left behind a small array is never reused: the paper-scale solve ran out of memory
    so); inside large_blocks_mapped it is mapped, and goes back to the OS when freed."""
    kept = {}
    for mode in ("outside", "inside", "nested"):
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                             check=True).stdout.strip()
        if out == "unsupported":
            pytest.skip("no mallopt in this libc")
        kept[mode] = float(out)
    assert kept["outside"] > 150
    assert kept["inside"] < 20
    assert kept["nested"] < 20
