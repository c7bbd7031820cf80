"""How far float rounding alone moves the Taylor optima and the regret slopes (not a speed benchmark).

Trains one autoencoder run at the cpu profile (fixed rates) with two MSE recorders on the same
trajectory: one takes the training pass's trace (the default), the other recomputes the forward
pass and the errors itself. Both are exact; they differ only in float rounding. Prints the
relative differences of the optima, and how much the fitted log-log slopes of regret differ,
with and without leaving out regrets within ``REGRET_RESOLUTION`` of ``N TO(N)``
(the numbers behind that constant in ``ntaylor_lib/regret.py``).

    python benchmarks/regret_rounding.py [--optimizer sgd] [--epochs 10]
"""

from __future__ import annotations

import argparse

import numpy as np

from ntaylor_lib.paper.experiments import experiment_config, taylor_recorders
from ntaylor_lib.runs.allocator import retain_freed_memory
from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.runs.training import train
from ntaylor_lib.taylor.regret import loglog_slope, regret_table


def slopes(table, labels, resolved: bool) -> dict[str, float]:
    out = {}
    for label in labels:
        rows = sorted((r for r in table if r["scale"] == label and r["box_scale"] == 1.0), key=lambda r: r["N"])
        reference = [r["n_to"] for r in rows] if resolved else None
        out[label] = loglog_slope([r["N"] for r in rows], [r["regret"] for r in rows], reference)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--optimizer", default="sgd", choices=["adam", "rmsprop", "sgd"])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    retain_freed_memory()
    params = get_profile("cpu", {"device": "cpu", "lr_source": "fixed", "epochs": args.epochs})
    traced, own = taylor_recorders("autoencoder", params)[0], taylor_recorders("autoencoder", params)[0]
    own.uses_trace = False  # its own batched forward pass and error recursion
    result = train(experiment_config(params, "autoencoder", args.optimizer), recorders=[traced, own], progress=False)
    a, b = traced.arrays(), own.arrays()
    rel = np.abs(a["optimum"] - b["optimum"]) / np.maximum(np.abs(b["optimum"]), 1e-300)
    print(f"autoencoder, {args.optimizer}, {args.epochs} epochs, {len(a['labels'])} scales: Taylor optima differ by "
          f"at most {np.nanmax(rel):.2g} (median {np.nanmedian(rel):.2g}), relative")
    loss = np.asarray(result.history.round_loss)
    for resolved in (False, True):
        sa, sb = (slopes(regret_table(loss, x), a["labels"], resolved) for x in (a, b))
        both = [k for k in sa if np.isfinite(sa[k]) and np.isfinite(sb[k])]
        one = sum(np.isfinite(sa[k]) != np.isfinite(sb[k]) for k in sa)
        diff = [abs(sa[k] - sb[k]) for k in both]
        print(f"  slopes {'without' if resolved else 'with'} regrets under the resolution: fitted by both {len(both)}, "
              f"by one only {one}; difference max {max(diff, default=float('nan')):.3g}, "
              f"median {np.median(diff) if diff else float('nan'):.3g}")


if __name__ == "__main__":
    main()
