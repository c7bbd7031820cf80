"""The horizon schedule: which epoch ends are horizons, and that a scheduled run's optima are those an
every-epoch run has at the same horizons."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from ntaylor_lib.runs.profiles import ParameterError
from ntaylor_lib.taylor.recorders import CEFactorRecorder, CEReplayRecorder, Group, MSEStatsRecorder
from ntaylor_lib.taylor.recorders.base import horizon_epochs
from ntaylor_lib.taylor.regret import regret_table
from tests.taylor.nets import conv_batches, dense_batches, drive, small_nets


def test_horizon_epochs_every_and_log():
    assert horizon_epochs("every", 5) == [1, 2, 3, 4, 5]
    assert horizon_epochs("log:4", 100) == [1, 5, 22, 100]
    schedule = horizon_epochs("log:12", 100)
    # 12 points of geomspace(1, 100) round to 11 distinct epochs (1.5 and 2.3 both to 2)
    assert schedule == [1, 2, 4, 5, 8, 12, 19, 28, 43, 66, 100]
    later = np.diff(np.log(schedule[3:]))  # past the first few (where rounding to whole epochs rules), even steps
    assert later.max() < 1.3 * later.min()


def test_horizon_epochs_edge_cases():
    assert horizon_epochs("log:1", 10) == [1, 10]  # the first and the last are always horizons
    assert horizon_epochs("log:1", 1) == [1]
    assert horizon_epochs("log:50", 7) == list(range(1, 8))  # more horizons than epochs: every epoch
    assert horizon_epochs("log:5", 6) == [1, 2, 4, 6]  # 1, 1.6, 2.4, 3.8, 6 round to a duplicate: dropped
    for bad in ("log", "log:0", "log:x", "all", "log:-2"):
        with pytest.raises(ParameterError, match="taylor_horizons"):
            horizon_epochs(bad, 10)


def _same_optima(make, net, batches, task, epochs, schedule, lr=0.05):
    every = make("every")
    drive(every, copy.deepcopy(net), batches, task, epochs=epochs, lr=lr)
    scheduled = make(schedule)
    drive(scheduled, copy.deepcopy(net), batches, task, epochs=epochs, lr=lr)
    wanted = horizon_epochs(schedule, epochs)
    a, b = every.arrays(), scheduled.arrays()
    assert list(b["horizon_epoch"]) == wanted and len(wanted) < epochs
    at = [list(a["horizon_epoch"]).index(e) for e in wanted]
    np.testing.assert_array_equal(b["horizons"], a["horizons"][at])
    np.testing.assert_allclose(b["optimum"], a["optimum"][:, :, at], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(b["samples_used"], a["samples_used"][:, at])
    rows = regret_table(np.ones(len(batches)), b)
    assert sorted({r["epoch"] for r in rows}) == wanted


def test_a_scheduled_mse_recorder_gives_the_every_epoch_optima_at_its_horizons():
    _, net, _ = small_nets()[0]
    batches = dense_batches(net, rounds=12)
    groups = [Group(2, [0, 1, 2, 3], True), Group(1, [1, 3], False), Group(3, [0, 6], False)]
    _same_optima(lambda h: MSEStatsRecorder(groups, box_scales=(1.0, math.inf), factor_width=2, input_stride=2,
                                            horizons=h), net, batches, "autoencoder", epochs=6, schedule="log:3")


def test_scheduled_cross_entropy_recorders_give_the_every_epoch_optima_at_their_horizons():
    _, net, x = small_nets()[1]
    batches = conv_batches(net, x, rounds=8)
    groups = [Group(2, [0, 2], False), Group(1, [0, 1, 2], True)]
    _same_optima(lambda h: CEFactorRecorder(groups, stride=2, box_scales=(1.0,), dtype=torch.float64, tol=1e-13,
                                            horizons=h), net, batches, "convnet", epochs=4, schedule="log:2", lr=0.5)
    _same_optima(lambda h: CEReplayRecorder([Group(2, list(range(4)), True)], stride=2, box_scales=(1.0,),
                                            tol=1e-13, horizons=h), net, batches, "convnet", epochs=4,
                 schedule="log:2", lr=0.5)


def _host_and_device(make, net, batches, task, epochs, lr=0.05):
    """Solve one recording on the host path and on the device path (on the CPU here: the same code
    a CUDA run takes, with the problems built in float64 on the run's device)."""
    rec = make()
    drive(rec, copy.deepcopy(net), batches, task, epochs=epochs, lr=lr)
    host = rec.arrays()
    rec.solve(on="device")
    device = rec.arrays()
    assert np.isfinite(host["optimum"]).all()
    np.testing.assert_allclose(device["optimum"], host["optimum"], rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="on="):
        rec.solve(on="gpu")


def test_mse_device_path_equals_the_host_path():
    _, net, _ = small_nets()[0]
    batches = dense_batches(net, rounds=12)
    groups = [Group(2, [0, 1, 2, 3], True), Group(1, [1, 3], False), Group(3, [0, 6], False)]
    _host_and_device(lambda: MSEStatsRecorder(groups, box_scales=(1.0, 2.0, math.inf), factor_width=2, input_stride=2),
                     net, batches, "autoencoder", epochs=3)


def test_cross_entropy_device_path_equals_the_host_path():
    _, net, x = small_nets()[1]
    batches = conv_batches(net, x, rounds=8)
    groups = [Group(2, [0, 2], False), Group(1, [0, 1, 2], True)]
    _host_and_device(lambda: CEFactorRecorder(groups, stride=2, box_scales=(1.0, math.inf), dtype=torch.float64,
                                              tol=1e-13), net, batches, "convnet", epochs=2, lr=0.5)
    _host_and_device(lambda: CEReplayRecorder([Group(2, list(range(4)), True)], stride=2, box_scales=(1.0,),
                                              tol=1e-13), net, batches, "convnet", epochs=2, lr=0.5)
