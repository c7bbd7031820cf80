"""The run store's integrity checks: what verifying stored runs costs, against the book build they serve.

Every process that serves a stored run verifies its files once (size, then SHA-256; the result
is remembered for the process). A book build executes each chapter in its own kernel, so at most
every chapter verifies every run it reads once. This benchmark times the verification of every
run of a results store from a cold cache, and, given the book build's ``timings.json``, bounds the
share of the build it costs by charging every chapter with verifying every stored run::

    python benchmarks/bench_store.py [--results results] [--timings _build/executed/timings.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ntaylor_lib.runs import store as store_module
from ntaylor_lib.runs.files import default_results_root
from ntaylor_lib.runs.store import STORED_FILES, RunStore


def verify_all(root: Path) -> tuple[int, int, float]:
    """(runs, bytes, seconds) to verify every stored run of ``root`` from a cold cache."""
    store_module._VERIFIED.clear()
    keys = sorted(p.parent.name for p in (root / "runs").glob("*/manifest.json"))
    size = sum((root / "runs" / k / name).stat().st_size for k in keys for name in STORED_FILES)
    started = time.perf_counter()
    store = RunStore(root)
    for key in keys:
        assert store.load(key) is not None
    return len(keys), size, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=default_results_root())
    parser.add_argument("--timings", type=Path, default=None, help="the book build's _build/executed/timings.json")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    best = min((verify_all(args.results) for _ in range(args.repeat)), key=lambda r: r[2])
    runs, size, seconds = best
    print(f"verified {runs} runs, {size / 2**20:.1f} MiB, in {seconds:.3f} s (best of {args.repeat}, cold cache): "
          f"{size / 2**20 / seconds:.0f} MiB/s")
    if args.timings:
        timings = json.loads(args.timings.read_text())["seconds"]
        build, chapters = sum(timings.values()), len(timings)
        bound = chapters * seconds
        print(f"book build: {chapters} chapters, {build:.0f} s executing; every chapter verifying every run would "
              f"cost {bound:.2f} s, {100 * bound / build:.2f}% of it")


if __name__ == "__main__":
    main()
