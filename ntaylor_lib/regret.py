"""Regret curves: incurred loss against the hindsight Taylor optimum (Theorem 2, Figures 3 and 4).

For each horizon ``N`` (the end of an epoch), scale ``S`` and comparator box:

    cum_loss = sum_{n<=N} L_n,   n_to = N TO_S(N),   regret R_S(N) = N (AL(N) - TO_S(N)) = cum_loss - n_to

and each divided by ``sqrt N`` (Theorem 2: ``R_S(N) = O(sqrt N)``, so these stay flat).
``TO`` comes from the rounds a recorder used; ``regret_recorded`` pairs it with the
incurred loss of those same rounds (``N (AL_rec(N) - TO_S(N))``), which is the
consistent comparison when rounds were subsampled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .profiles import TASKS, ParameterError
from .recorders import CEFactorRecorder, Group, MSEStatsRecorder, TaylorRecorder, spread
from .replay import CEReplayRecorder

RECORDER_NAMES = (MSEStatsRecorder.name, CEFactorRecorder.name, CEReplayRecorder.name)


def regret_table(round_loss: np.ndarray, arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Tidy rows, one per scale, box scale and horizon.

    Args:
        round_loss: ``(R,)`` incurred losses ``L_n`` of every round.
        arrays: a :class:`TaylorRecorder`'s arrays (``labels``, ``optimum`` ``(S, B, E)``, ...).

    Returns:
        ``[{"scale", "layer", "neuron", "box_scale", "epoch", "N", "cum_loss", "n_to",
        "regret", "regret_recorded", "<each>_sqrt", ...}, ...]`` (neuron -1: a whole layer).
    """
    cumulative = np.concatenate([[0.0], np.cumsum(np.asarray(round_loss, dtype=np.float64))])
    rows = []
    horizons = arrays["horizons"]
    for s, label in enumerate(arrays["labels"]):
        for b, box in enumerate(arrays["box_scales"]):
            for e, n in enumerate(horizons):
                n = int(n)
                if n > len(round_loss):
                    continue  # the run diverged before this horizon
                to = float(arrays["optimum"][s, b, e])
                cum, root = float(cumulative[n]), math.sqrt(n)
                rec = float(arrays["recorded_loss"][s, e])
                row = {
                    "scale": str(label), "layer": int(arrays["layer"][s]), "neuron": int(arrays["neuron"][s]),
                    "box_scale": float(box), "epoch": e + 1, "N": n, "samples_used": int(arrays["samples_used"][s, e]),
                    "cum_loss": cum, "n_to": n * to, "regret": cum - n * to, "regret_recorded": n * (rec - to),
                    "avg_loss": cum / n, "taylor_optimum": to,
                }
                for key in ("cum_loss", "n_to", "regret", "regret_recorded"):
                    row[f"{key}_sqrt"] = row[key] / root
                rows.append(row)
    return rows


def regret_curves(run_or_arrays: Any, recorder: str | None = None) -> list[dict[str, Any]]:
    """The regret table of a stored run (a :class:`ntaylor_lib.store.Run` or its ``arrays`` dict).

    Args:
        recorder: one recorder's name (``taylor_mse``, ``taylor_ce`` or ``taylor_replay``);
            when omitted, the rows of every Taylor recorder the run carries, each row
            naming its ``recorder``.
    """
    arrays = run_or_arrays.arrays if hasattr(run_or_arrays, "arrays") else run_or_arrays
    names = [recorder] if recorder else [n for n in RECORDER_NAMES if f"{n}/optimum" in arrays]
    if not names or f"{names[0]}/optimum" not in arrays:
        raise KeyError(f"no Taylor recorder arrays in this run; looked for {names or list(RECORDER_NAMES)}")
    rows = []
    for name in names:
        prefix = f"{name}/"
        own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        rows += [{**row, "recorder": name} for row in regret_table(arrays["round_loss"], own)]
    return rows


#: A regret below this fraction of ``N TO(N)`` is within the float rounding of the optimum, and
#: is not fitted: on one autoencoder run, two exact routes to the same MSE statistics (the
#: training pass's trace, and the recorder's own forward pass) gave optima up to 2.7e-6 apart
#: (relative; median about 2e-8), and moved slopes fitted on such regrets by up to 6
#: (``benchmarks/regret_rounding.py`` at commit d742707, three optimizers; with this threshold
#: they agree to 0.004; the README has the numbers).
REGRET_RESOLUTION = 1e-5


def fitted_horizons(n: Sequence[float], regret: Sequence[float], reference: Sequence[float] | None = None,
                    resolution: float = REGRET_RESOLUTION) -> np.ndarray:
    """Which horizons :func:`loglog_slope` fits: ``R > 0`` (the optimizer did not beat the Taylor
    optimum) and finite, and, given ``reference`` (``N TO(N)`` per horizon), ``R > resolution *
    |N TO(N)|`` (not within the rounding of the optimum)."""
    n, r = np.asarray(n, dtype=np.float64), np.asarray(regret, dtype=np.float64)
    keep = (r > 0) & (n > 0) & np.isfinite(r)
    if reference is not None:
        keep &= r > resolution * np.abs(np.asarray(reference, dtype=np.float64))
    return keep


def loglog_slope(n: Sequence[float], regret: Sequence[float], reference: Sequence[float] | None = None,
                 resolution: float = REGRET_RESOLUTION) -> float:
    """Least-squares slope of ``log R`` against ``log N`` (Theorem 2: about 0.5 or below) over the
    :func:`fitted_horizons`; ``nan`` when fewer than two.
    """
    n, r = np.asarray(n, dtype=np.float64), np.asarray(regret, dtype=np.float64)
    keep = fitted_horizons(n, r, reference, resolution)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(n[keep]), np.log(r[keep]), 1)[0])


def taylor_recorders(task: str, params: Mapping[str, Any], solve_at_end: bool = True) -> list[TaylorRecorder]:
    """The Taylor recorders of ``task`` as a profile sets them (keys ``taylor_*``).

    Autoencoder: layer ``taylor_ae_layer`` whole, and up to ``taylor_neurons`` neurons of
    every layer (the input layer's ``taylor_input_neurons`` on every ``taylor_input_stride``-th
    round). Convnet: the first conv layer whole, up to ``taylor_conv_neurons`` neurons of each
    conv layer and ``taylor_neurons`` of each dense layer, on every ``taylor_round_stride``-th
    round, ``taylor_samples`` samples of each; and the whole layers ``taylor_replay_layers``
    replayed from weight snapshots (:class:`ntaylor_lib.replay.CEReplayRecorder`) of every
    ``taylor_replay_stride``-th round, ``taylor_replay_samples`` examples of each.
    """
    boxes = [float(b) for b in str(params["taylor_box_scales"]).split(",")]
    if task == "autoencoder":
        from .models import AUTOENCODER_SIZES as sizes

        groups = [Group(int(params["taylor_ae_layer"]), list(range(sizes[int(params["taylor_ae_layer"])])), True)]
        for l in range(1, len(sizes)):
            count = params["taylor_input_neurons"] if l == 1 else params["taylor_neurons"]
            if count:
                groups.append(Group(l, spread(int(count), sizes[l]), False))
        return [MSEStatsRecorder(groups, boxes, input_stride=params["taylor_input_stride"], solve_at_end=solve_at_end)]
    if task == "convnet":
        width, hidden, classes = int(params["convnet_width"]), 192, 10
        groups = [Group(1, list(range(width)), True)]
        for l in (1, 2, 3):
            if params["taylor_conv_neurons"]:
                groups.append(Group(l, spread(int(params["taylor_conv_neurons"]), width), False))
        for l, c in ((4, hidden), (5, classes)):
            if params["taylor_neurons"]:
                groups.append(Group(l, spread(int(params["taylor_neurons"]), c), False))
        box_ce = [float(b) for b in str(params["taylor_box_scales_ce"]).split(",")]
        recorders: list[TaylorRecorder] = [
            CEFactorRecorder(groups, stride=params["taylor_round_stride"], samples=params["taylor_samples"],
                             box_scales=box_ce, solve_at_end=solve_at_end, tol=float(params["taylor_ce_tol"]))]
        replayed = [int(l) for l in str(params["taylor_replay_layers"]).split(",") if l.strip()]
        if replayed:
            sizes = {1: width, 2: width, 3: width, 4: hidden, 5: classes}
            recorders.append(CEReplayRecorder(
                [Group(l, list(range(sizes[l])), True) for l in replayed], stride=params["taylor_replay_stride"],
                samples=params["taylor_replay_samples"], box_scales=box_ce, solve_at_end=solve_at_end,
                tol=float(params["taylor_ce_tol"]), max_iter=params["taylor_replay_iter"]))
        return recorders
    raise ParameterError(f"task={task!r} is not one of {', '.join(TASKS)}")


__all__ = ["REGRET_RESOLUTION", "fitted_horizons", "loglog_slope", "regret_curves", "regret_table", "taylor_recorders"]
