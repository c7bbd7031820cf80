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
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .recorders import CEFactorRecorder, CEReplayRecorder, MSEStatsRecorder

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
    # the epoch each horizon ends (arrays of a schedule name them; otherwise every epoch is one)
    epochs = arrays["horizon_epoch"] if "horizon_epoch" in arrays else np.arange(1, len(horizons) + 1)
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
                    "box_scale": float(box), "epoch": int(epochs[e]), "N": n,
                    "samples_used": int(arrays["samples_used"][s, e]),
                    "cum_loss": cum, "n_to": n * to, "regret": cum - n * to, "regret_recorded": n * (rec - to),
                    "avg_loss": cum / n, "taylor_optimum": to,
                }
                for key in ("cum_loss", "n_to", "regret", "regret_recorded"):
                    row[f"{key}_sqrt"] = row[key] / root
                rows.append(row)
    return rows


def regret_curves(run_or_arrays: Any, recorder: str | None = None) -> list[dict[str, Any]]:
    """The regret table of a stored run (a :class:`ntaylor_lib.runs.store.Run` or its ``arrays`` dict).

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
#: (``benchmarks/regret_rounding.py``, three optimizers; with this threshold they agree to
#: 0.004; ``benchmarks/README.md`` has the numbers).
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


def series_slope(rows: Sequence[Mapping[str, Any]], column: str = "regret_recorded") -> tuple[float, int]:
    """The :func:`loglog_slope` of one series of regret rows (one scale and box, any order), with
    ``N TO(N)`` (``n_to``) as the rounding reference; also how many horizons it fits."""
    items = sorted(rows, key=lambda r: r["N"])
    n, regret, n_to = [r["N"] for r in items], [r[column] for r in items], [r["n_to"] for r in items]
    return loglog_slope(n, regret, n_to), int(fitted_horizons(n, regret, n_to).sum())


def _same_box(a: float, b: float) -> bool:
    return a == b or (math.isinf(a) and math.isinf(b))


def slopes(rows: Sequence[Mapping[str, Any]], column: str = "regret_recorded",
           box_scale: float = 1.0) -> list[dict[str, Any]]:
    """Fitted slope of ``log column`` against ``log N`` for every scale at one box scale (Theorem 2).

    Returns:
        ``[{"scale", "layer", "neuron", "slope", "horizons", "positive"}, ...]``: ``horizons``
        counts the horizons, ``positive`` those the fit uses (:func:`fitted_horizons`:
        positive regret above the rounding of ``N TO(N)``; ``slope`` is ``nan`` when fewer than two).
    """
    series: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        if _same_box(r["box_scale"], box_scale):
            series[r["scale"]].append(r)
    out = []
    for scale, items in series.items():
        slope, positive = series_slope(items, column)
        out.append({"scale": scale, "layer": items[0]["layer"], "neuron": items[0]["neuron"],
                    "slope": slope, "horizons": len(items), "positive": positive})
    return out


def mean_slopes(rows: Sequence[Mapping[str, Any]], by: str, column: str = "regret_recorded") -> dict[Any, float]:
    """Slope of the mean regret over the scales sharing ``by`` (e.g. ``"layer"``), against ``N``.

    At each horizon the regrets ``column`` and their references ``n_to`` are averaged over
    the scales of a group, and the series is fitted as :func:`series_slope` fits one scale
    (Figure 3's per-layer mean). Returns ``{group: slope}`` (``nan`` when fewer than two
    horizons fit).
    """
    groups: dict[Any, dict[int, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[r[by]][r["N"]].append(r)
    out = {}
    for key, by_n in groups.items():
        means = [{"N": n, column: float(np.mean([r[column] for r in items])),
                  "n_to": float(np.mean([r["n_to"] for r in items]))} for n, items in by_n.items()]
        out[key] = series_slope(means, column)[0]
    return out


def mean_sd(rows: Sequence[Mapping[str, Any]], by: Sequence[str], value: str) -> list[dict[str, Any]]:
    """Mean and (population) standard deviation of ``value`` over rows sharing the ``by`` fields.

    Returns:
        ``[{**by, "mean", "sd", "lower", "upper", "count"}, ...]`` with ``lower/upper = mean -+ sd``.
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in by)].append(float(r[value]))
    out = []
    for key, values in groups.items():
        v = np.asarray(values)
        mean, sd = float(v.mean()), float(v.std())
        out.append({**dict(zip(by, key)), "mean": mean, "sd": sd, "lower": mean - sd, "upper": mean + sd,
                    "count": len(values)})
    return out


def widening_never_lowers(rows: Sequence[Mapping[str, Any]], rtol: float = 1e-9) -> bool:
    """Whether, for every scale and horizon, the regret does not decrease as the comparator box
    widens (``box_scale`` ascending, ``inf`` last): a wider box can only lower the optimum, so a
    decrease beyond ``rtol`` relative would be a solver failure."""
    series: dict[tuple[Any, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        series[(r.get("recorder"), r.get("optimizer"), r["scale"], r["N"])].append(r)
    for items in series.values():
        ordered = sorted(items, key=lambda r: r["box_scale"])
        if any(a["regret"] > b["regret"] + rtol * max(1.0, abs(b["regret"])) for a, b in zip(ordered, ordered[1:])):
            return False
    return True


__all__ = ["REGRET_RESOLUTION", "fitted_horizons", "loglog_slope", "mean_sd", "mean_slopes", "regret_curves",
           "regret_table", "series_slope", "slopes", "widening_never_lowers"]
