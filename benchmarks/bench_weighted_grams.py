"""The input-layer neurons' Grams of a paper-scale horizon: blocked workspaces against whole copies.

``weighted_grams`` (rows gathered in blocks into workspaces allocated once) against the
baseline it replaced at 85a757f: each neuron's rows copied whole to float64 (about 1.2 GB a
neuron at a late horizon). Both run as the solve runs them: with ``retain_freed_memory`` in
force and inside ``large_blocks_mapped``. The rows are synthetic but shaped as MNIST's (about
80% zero pixels, 89 columns zero everywhere) and the weights as the recorder's (about 30% zero)::

    python benchmarks/bench_weighted_grams.py [--rows 100000] [--neurons 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from ntaylor_lib.runs.allocator import large_blocks_mapped, retain_freed_memory
from ntaylor_lib.taylor.recorders.gram import weighted_grams


def whole_copies(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The baseline: weighted_grams as it was before 85a757f."""
    q = x.shape[1]
    seen = (x != 0).any(0).nonzero().squeeze(1)
    xs = x[:, seen]
    h = torch.zeros(w.shape[1], q, q, dtype=torch.float64)
    block = (seen[:, None], seen[None, :])
    for j in range(w.shape[1]):
        rows = (w[:, j] != 0).nonzero().squeeze(1)
        a = xs[rows].double()
        h[j][block] = (a * w[rows, j, None].double()).T @ a
    return h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--neurons", type=int, default=5)
    args = parser.parse_args()
    retain_freed_memory()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.rows, 785, generator=g)
    x[x < 0.8] = 0
    x[:, :89] = 0
    x[:, -1] = 1.0  # the padding column of x~
    w = torch.rand(args.rows, args.neurons, generator=g)
    w[w < 0.3] = 0
    times = {}
    with large_blocks_mapped():
        for name, fn in (("whole copies (baseline)", whole_copies), ("blocked workspaces", weighted_grams)):
            fn(x[:2000], w[:2000])  # warm-up
            started = time.perf_counter()
            out = fn(x, w)
            times[name] = time.perf_counter() - started
            if name.startswith("whole"):
                reference = out
            else:
                error = float((out - reference).abs().max() / reference.abs().max())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.rows} rows x 785, {args.neurons} neurons")
    for name, seconds in times.items():
        print(f"  {name}: {seconds:.2f} s")
    base, new = times["whole copies (baseline)"], times["blocked workspaces"]
    print(f"  ratio baseline / blocked: {base / new:.2f}x; largest difference {error:.1e} of the largest entry")


if __name__ == "__main__":
    main()
