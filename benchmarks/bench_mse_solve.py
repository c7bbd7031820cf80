"""The autoencoder's Taylor solves at the ``paper`` profile, timed by problem size.

Trains the ``paper`` profile's autoencoder (all 60k MNIST images, every Taylor recorder of the
profile: layer 3 whole, 50 neurons of every layer including the input layer's) with Adam for
``--epochs`` epochs (``--optimizer``, default Adam), solving at the horizons ``--horizons``
(default ``every`` epoch end; ``log:K`` as the profile has it), then times
``MSEStatsRecorder.solve`` and, inside it, ``solve_quadratic_boxes`` grouped by the problem's
dimension (31: neurons of layers 3 and 5; 51: of layers 2 and 6; 21: of layer 4; 620: layer 3
whole; 785: the input layer's neurons). Run it at two commits to compare them::

    python benchmarks/bench_mse_solve.py [--epochs 2] [--optimizer adam] [--horizons every] [--save optima.npy]

``--save`` writes the optima (scales x boxes x horizons) so that two commits' answers can be compared.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch

from ntaylor_lib.paper import experiments
from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.runs.training import train
from ntaylor_lib.taylor.recorders import MSEStatsRecorder, mse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--horizons", default="every")
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    params = get_profile("paper", {"tasks": ["autoencoder"], "device": "cpu", "epochs": args.epochs,
                                   "taylor_horizons": args.horizons})
    config = experiments.experiment_config(params, "autoencoder", args.optimizer, None)
    recorders = experiments.standard_recorders("autoencoder", params, taylor=True)
    recorder = next(r for r in recorders if isinstance(r, MSEStatsRecorder))
    recorder.solve_at_end = False
    started = time.perf_counter()
    train(config, recorders, progress=False)
    trained = time.perf_counter() - started

    by_size: dict[int, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    solve_boxes = mse.solve_quadratic_boxes

    def timed(problem, boxes, starts=None, free_optimum=None):
        t = time.perf_counter()
        out = solve_boxes(problem, boxes, starts, free_optimum)
        by_size[len(problem.g)][0] += 1
        by_size[len(problem.g)][1] += time.perf_counter() - t
        return out

    mse.solve_quadratic_boxes = timed
    started = time.perf_counter()
    recorder.solve()
    solved = time.perf_counter() - started
    mse.solve_quadratic_boxes = solve_boxes
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.epochs} epochs trained in "
          f"{trained:.1f} s (with the recorders); solve() {solved:.1f} s for {len(recorder.horizons)} horizons")
    for size, (count, seconds) in sorted(by_size.items()):
        print(f"  dimension {size:4d}: {count:4d} problems, {seconds:7.2f} s")
    if args.save:
        np.save(args.save, recorder.arrays()["optimum"])


if __name__ == "__main__":
    main()
