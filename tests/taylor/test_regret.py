"""Summaries for the regret pages: slopes recover a known power law; mean and sd by group."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ntaylor_lib.taylor.regret import (
    REGRET_RESOLUTION,
    loglog_slope,
    mean_sd,
    mean_slopes,
    regret_table,
    series_slope,
    slopes,
    widening_never_lowers,
)


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


def test_mean_slopes_fit_the_mean_regret_of_each_group_with_its_reference():
    """Two neurons of a layer whose regrets grow like N^0.3 and N^0.7: the mean is fitted, not the
    mean of the slopes, and the mean N TO(N) is the rounding reference."""
    rows = ([{**r, "scale": "layer2/neuron0"} for r in _rows(0.3)]
            + [{**r, "scale": "layer2/neuron1"} for r in _rows(0.7)])
    n = np.array([10, 20, 40, 80], dtype=float)
    mean = (3.0 * n**0.3 + 3.0 * n**0.7) / 2
    expected = np.polyfit(np.log(n), np.log(mean), 1)[0]
    assert mean_slopes(rows, "layer")[2] == pytest.approx(expected)
    # a mean within the rounding of the mean optimum at every horizon gives no slope
    tiny = [{**r, "regret_recorded": 1e-7 * r["n_to"]} for r in rows]
    assert math.isnan(mean_slopes(tiny, "layer")[2])
    # series_slope on one scale is what slopes() reports for it
    assert series_slope(_rows(0.4))[0] == pytest.approx(slopes(_rows(0.4))[0]["slope"])


def test_widening_never_lowers_flags_a_regret_that_drops_as_the_box_widens():
    base = [{"scale": "layer3", "N": 10, "box_scale": b, "regret": r}
            for b, r in ((1.0, 1.0), (2.0, 1.5), (math.inf, 2.0))]
    assert widening_never_lowers(base)
    assert widening_never_lowers([{**r, "regret": 1.0} for r in base])  # equal regrets: the box did not bind
    dropped = [dict(r) for r in base]
    dropped[2]["regret"] = 1.4  # the unconstrained optimum came out worse than a boxed one
    assert not widening_never_lowers(dropped)
    assert widening_never_lowers(dropped[:2] + [{**dropped[2], "N": 20}])  # another horizon is another series


def test_regret_table_and_slope():
    arrays = {"labels": np.array(["layer1"]), "layer": np.array([1]), "neuron": np.array([-1]),
              "box_scales": np.array([1.0]), "horizons": np.array([4, 16]), "optimum": np.array([[[0.5, 0.25]]]),
              "samples_used": np.array([[4, 16]]), "recorded_loss": np.array([[1.0, 0.5]])}
    rows = regret_table(np.ones(16), arrays)
    assert [r["regret"] for r in rows] == [4 - 2.0, 16 - 4.0]
    assert rows[1]["regret_sqrt"] == pytest.approx(12 / 4)
    n = np.array([10, 100, 1000.0])
    assert loglog_slope(n, 3 * np.sqrt(n)) == pytest.approx(0.5)
