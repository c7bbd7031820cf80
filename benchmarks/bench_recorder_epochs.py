"""Seconds per epoch of the paper profile's autoencoder with every recorder (no solve).

Run it at two commits to compare what the recorders cost in training::

    python benchmarks/bench_recorder_epochs.py 0    # 1: with a progress bar
"""

from __future__ import annotations

import sys

from ntaylor_lib.paper import experiments
from ntaylor_lib.runs.allocator import retain_freed_memory
from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.runs.training import train


def main() -> None:
    retain_freed_memory()  # as the book's pages run
    progress = len(sys.argv) > 1 and sys.argv[1] == "1"
    params = get_profile("paper", {"tasks": ["autoencoder"], "device": "cpu", "epochs": 3,
                                   "taylor_horizons": "log:12"})
    config = experiments.experiment_config(params, "autoencoder", "adam", None)
    recorders = experiments.standard_recorders("autoencoder", params, taylor=True)
    for recorder in recorders:
        recorder.solve_at_end = False
    result = train(config, recorders, progress=progress)
    print("progress", int(progress), "epoch times", [round(t, 2) for t in result.history.epoch_time])


if __name__ == "__main__":
    main()
