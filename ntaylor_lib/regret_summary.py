"""Summaries of regret tables for the book's Theorem 2, Figure 3 and Figure 4 pages.

Pure functions on the tidy rows of :func:`ntaylor_lib.regret.regret_curves`: log-log slopes
per scale (Theorem 2, claim C1), mean and standard deviation over neurons (Figure 3's
bands), and a small HTML table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import numpy as np

from .regret import fitted_horizons, loglog_slope


def slopes(rows: Sequence[Mapping[str, Any]], column: str = "regret_recorded", box_scale: float = 1.0) -> list[dict[str, Any]]:
    """Fitted slope of ``log column`` against ``log N`` for every scale at one box scale.

    Returns:
        ``[{"scale", "layer", "neuron", "slope", "horizons", "positive"}, ...]``: ``horizons``
        counts the horizons, ``positive`` those the fit uses (:func:`ntaylor_lib.regret.fitted_horizons`:
        positive regret above the rounding of ``N TO(N)``; ``slope`` is ``nan`` when fewer than two).
    """
    series: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["box_scale"] == box_scale or (math.isinf(box_scale) and math.isinf(r["box_scale"])):
            series[r["scale"]].append(r)
    out = []
    for scale, items in series.items():
        items = sorted(items, key=lambda r: r["N"])
        n, regret, n_to = [r["N"] for r in items], [r[column] for r in items], [r["n_to"] for r in items]
        out.append({
            "scale": scale, "layer": items[0]["layer"], "neuron": items[0]["neuron"],
            "slope": loglog_slope(n, regret, n_to), "horizons": len(items),
            "positive": int(fitted_horizons(n, regret, n_to).sum()),
        })
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


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], caption: str = "") -> str:
    """A plain HTML table of ``rows`` (floats to 2 decimals, ``nan`` as an en dash)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "&ndash;" if math.isnan(v) else f"{v:.2f}"
        return escape(str(v))

    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<table class="ntaylor-table">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


__all__ = ["html_table", "mean_sd", "slopes"]
