"""Summaries for the regret pages: slopes recover a known power law; mean and sd by group."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ntaylor_lib.regret import REGRET_RESOLUTION, loglog_slope
from ntaylor_lib.regret_summary import html_table, mean_sd, slopes


def _rows(power, box=1.0, scale="layer2/neuron0", n_to=100.0):
    return [{"scale": scale, "layer": 2, "neuron": 0, "box_scale": box, "N": n, "regret_recorded": 3.0 * n**power,
             "n_to": n_to * n} for n in (10, 20, 40, 80)]


def test_slopes_recover_the_power_and_filter_the_box():
    rows = _rows(0.5) + _rows(1.0, box=math.inf)
    out = slopes(rows)
    assert len(out) == 1 and out[0]["slope"] == pytest.approx(0.5) and out[0]["positive"] == 4
    assert slopes(rows, box_scale=math.inf)[0]["slope"] == pytest.approx(1.0)
    negative = [{**r, "regret_recorded": -1.0} for r in _rows(0.5)]
    assert math.isnan(slopes(negative)[0]["slope"])


def test_mean_sd_by_group():
    rows = [{"layer": 1, "epoch": 1, "v": x} for x in (1.0, 3.0)] + [{"layer": 2, "epoch": 1, "v": 5.0}]
    out = {r["layer"]: r for r in mean_sd(rows, ["layer", "epoch"], "v")}
    assert out[1]["mean"] == 2.0 and out[1]["sd"] == pytest.approx(np.std([1.0, 3.0]))
    assert out[1]["lower"] == 1.0 and out[1]["upper"] == 3.0 and out[2]["count"] == 1


def test_html_table():
    text = html_table([{"a": 0.123, "b": float("nan"), "c": "<x>"}], ["a", "b", "c"], caption="t")
    assert "0.12" in text and "&ndash;" in text and "&lt;x&gt;" in text and "<caption>t</caption>" in text


def test_regret_within_the_rounding_of_the_optimum_is_not_fitted():
    """A horizon whose regret is at most REGRET_RESOLUTION of N TO(N) is noise, not growth: it is
    left out of the fit, and a scale with fewer than two resolved horizons gets no slope."""
    rows = _rows(0.5)
    rows[0] = {**rows[0], "regret_recorded": 0.5 * REGRET_RESOLUTION * rows[0]["n_to"]}  # under the resolution
    out = slopes(rows)[0]
    assert out["positive"] == 3 and out["slope"] == pytest.approx(0.5)  # the other three lie on sqrt(N)
    tiny = [{**r, "regret_recorded": 1e-7 * r["n_to"] * r["N"]} for r in _rows(0.5)]  # grows like N^2, but noise
    assert slopes(tiny)[0]["positive"] == 0 and math.isnan(slopes(tiny)[0]["slope"])
    assert loglog_slope([1, 2], [1e-9, 4e-9]) == pytest.approx(2.0)  # without a reference, nothing is left out
