"""The paper's experiments: a standard run, every recorder attached, resumes exactly through the store."""

from __future__ import annotations

import numpy as np
import pytest

from ntaylor_lib.paper.experiments import experiment_config, standard_recorders, taylor_recorders
from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.runs.store import RunStore, run_key
from ntaylor_lib.taylor.recorders import CEFactorRecorder, CEReplayRecorder, MSEStatsRecorder
from tests.interrupt import Interrupt


@pytest.mark.parametrize("task", ["autoencoder", "convnet"])
def test_a_standard_run_interrupted_mid_epoch_resumes_to_identical_arrays(mnist_root, tmp_path, task):
    """Every recorder's state (Taylor statistics and factors, replay snapshots, configurations, signed
    gradients, the horizons of a schedule) travels in the checkpoint, which holds tensors and plain
    containers only."""
    # three epochs with horizons at the first and the last: the interruption falls between them
    params = get_profile("smoke", {"epochs": 3, "train_size": 512, "eval_size": 64, "probe_size": 16,
                                   "convnet_width": 4, "taylor_round_stride": 3, "taylor_replay_stride": 3,
                                   "taylor_horizons": "log:2"})
    config = experiment_config(params, task, "adam")

    def recorders(stop=None):
        return [Interrupt(stop), *standard_recorders(task, params)]

    whole = RunStore(tmp_path / "a").get(config, recorders=recorders(), progress=False)
    store = RunStore(tmp_path / "b")
    rounds_per_epoch = params["train_size"] // config.batch_size
    with pytest.raises(KeyboardInterrupt):
        store.get(config, recorders=recorders(rounds_per_epoch + 2), progress=False)
    assert (store.run_dir(run_key(config, recorders())) / "checkpoint.pt").is_file()
    resumed = store.get(config, recorders=recorders(), progress=False)
    assert resumed.manifest["resumed_from_epoch"] == 1
    for name in ("taylor_mse", "taylor_ce", "taylor_replay"):
        if f"{name}/horizon_epoch" in whole.arrays:
            assert list(whole.arrays[f"{name}/horizon_epoch"]) == [1, 3]
    assert sorted(resumed.arrays) == sorted(whole.arrays)
    for name, value in whole.arrays.items():
        if name != "epoch_time":
            np.testing.assert_array_equal(resumed.arrays[name], value, err_msg=name)


def test_taylor_recorders_follow_the_profile():
    """Which scales, boxes and strides the profile's keys give, per task."""
    params = get_profile("smoke", {"taylor_box_scales": "1,4,inf", "taylor_replay_layers": "2"})
    (mse,) = taylor_recorders("autoencoder", params)
    assert isinstance(mse, MSEStatsRecorder) and mse.box_scales == [1.0, 4.0, float("inf")]
    assert mse.groups[0].joint and mse.groups[0].layer == params["taylor_ae_layer"]
    assert mse.input_stride == params["taylor_input_stride"]
    factors, replay = taylor_recorders("convnet", params)
    assert isinstance(factors, CEFactorRecorder) and isinstance(replay, CEReplayRecorder)
    assert [g.layer for g in replay.groups] == [2] and factors.stride == params["taylor_round_stride"]
    none = get_profile("smoke", {"taylor_replay_layers": ""})
    assert [type(r) for r in taylor_recorders("convnet", none)] == [CEFactorRecorder]
