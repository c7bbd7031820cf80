"""Wall-clock timing for the benchmarks, with CUDA's queue drained around every measurement."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    """Wait for the GPU's queued work (kernels run asynchronously), so that a timing holds it."""
    if device == "cuda":
        torch.cuda.synchronize()


def seconds(fn: Callable[[], object], device: str = "cpu") -> float:
    """Wall seconds of ``fn()`` on ``device``, synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start
