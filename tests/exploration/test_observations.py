"""Observations 1 and 2: the straight-line walk and the clamping comparison, on tiny networks."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ntaylor_lib.exploration.configurations import ConfigurationRecorder, packed_configuration
from ntaylor_lib.exploration.observations import (
    clamping_rows,
    initial_model,
    line_walk,
    line_walk_summary,
    trained_model,
)
from ntaylor_lib.runs.config import run_config
from ntaylor_lib.runs.data import task_data
from ntaylor_lib.runs.losses import batch_loss
from ntaylor_lib.runs.models import ReluNet, convnet
from ntaylor_lib.runs.training import train
from ntaylor_lib.taylor.jacobians import Scale


def _dense(seed: int) -> ReluNet:
    torch.manual_seed(seed)
    return ReluNet([nn.Linear(5, 7), nn.Linear(7, 6), nn.Linear(6, 3)])


def test_initial_model_is_the_runs_theta0(mnist_root, tiny_params):
    config = run_config(tiny_params, "autoencoder", "sgd", tiny_params["lr_autoencoder_sgd"])
    data = task_data(config.task, config.dataset, config.train_size, config.eval_size, config.probe_size)
    recorder = ConfigurationRecorder()
    result = train(config, recorders=[recorder], data=data, progress=False)
    np.testing.assert_array_equal(recorder.arrays()["packed"][0],
                                  packed_configuration(initial_model(config), data.probe_x))
    final = trained_model(config, result.model.state_dict())
    np.testing.assert_array_equal(recorder.arrays()["packed"][-1], packed_configuration(final, data.probe_x))


def test_line_walk_jumps_exactly_where_the_configuration_changes():
    start, end = _dense(0), _dense(1)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    y = torch.randn(3, 3, generator=torch.Generator().manual_seed(3))
    walk = line_walk(start, start.state_dict(), end.state_dict(), x, y, "autoencoder", points=801)
    changed = walk["changes"] > 0
    assert changed.any() and (~changed).any()
    assert np.all(walk["jump"][~changed] == 0.0)
    assert np.all(walk["jump"][changed] > 0.0)
    summary = line_walk_summary(walk)
    assert summary["jump_without_change"] == 0 and summary["changed"] == summary["both"] == int(changed.sum())
    # The loss at the ends is the network's loss; the slope is the loss's derivative
    # (central differences away from kinks).
    with torch.no_grad():
        assert np.isclose(walk["loss"][0], float(batch_loss("autoencoder", start.double()(x.double()), y.double())))
        assert np.isclose(walk["loss"][-1], float(batch_loss("autoencoder", end.double()(x.double()), y.double())))
    smooth = ~changed[:-1] & ~changed[1:]
    h = walk["t"][1] - walk["t"][0]
    central = (walk["loss"][2:] - walk["loss"][:-2]) / (2 * h)
    np.testing.assert_allclose(central[smooth], walk["slope"][1:-1][smooth], rtol=1e-3, atol=1e-5)


def test_line_walk_counts_pool_switches_on_a_convnet():
    torch.manual_seed(0)
    a = convnet(in_channels=1, image_size=8, width=2, hidden=4, classes=3)
    b = convnet(in_channels=1, image_size=8, width=2, hidden=4, classes=3)
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    walk = line_walk(a, a.state_dict(), b.state_dict(), x, y, "convnet", points=201)
    gates = (walk["changes"] + walk["pool_changes"]) > 0
    assert walk["pool_changes"].sum() > 0
    assert np.all(walk["jump"][~gates] == 0.0)


def test_taylor_approximation_equals_clamped_network_at_layer_and_neuron_scales():
    torch.manual_seed(0)
    net = convnet(in_channels=1, image_size=8, width=3, hidden=5, classes=4)
    x = torch.randn(6, 1, 8, 8)
    rows = clamping_rows(net, [Scale(), Scale(2), Scale(2, 1), Scale(4, 0)], x, sizes=(1e-2, 1.0))
    for row in rows:
        if row["scale"] == "network":
            continue
        assert row["taylor_vs_clamped"] < 1e-12, row
    network = [r for r in rows if r["scale"] == "network"]
    assert max(r["taylor_vs_clamped"] for r in network) > 1e-6  # products of several layers: not linear
    assert max(r["taylor_vs_free"] for r in rows if r["scale"] == "layer2") > 1e-6  # the free network's gates move


def test_signed_gradient_beats_every_sampled_point_of_the_inf_ball():
    from ntaylor_lib.exploration.signed_gradient import inf_ball_check

    g = torch.randn(40, generator=torch.Generator().manual_seed(0))
    check = inf_ball_check(g, samples=2000)
    assert np.isclose(check["signed"], check["l1"])
    assert max(check["best_vertex"], check["best_uniform"], check["scaled_gradient"]) < check["signed"]


def test_exploration_colours_are_distinct():
    from ntaylor_lib.site import charts

    colours = charts.exploration_colours(["rmsprop", "adam", "sgd 1", "sgd 0.1", "sgd 0.01"])
    assert colours["rmsprop"] == charts.OPTIMIZER_COLOURS["rmsprop"] and len(set(colours.values())) == 5
