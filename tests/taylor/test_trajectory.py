"""Figure 2's slice: replayed rounds are the run's rounds; Taylor and true losses touch with equal slope."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from ntaylor_lib.runs.config import run_config
from ntaylor_lib.runs.losses import batch_loss, per_sample_loss
from ntaylor_lib.runs.models import build_model
from ntaylor_lib.runs.training import train
from ntaylor_lib.taylor import trajectory
from ntaylor_lib.taylor.jacobians import Scale, scale_parameters, scale_vector


@pytest.mark.parametrize("task", ["autoencoder", "convnet"])
def test_replay_gives_the_runs_rounds(mnist_root, tiny_params, task):
    config = run_config(tiny_params, task, "rmsprop", tiny_params[f"lr_{task}_rmsprop"])
    losses = train(config, progress=False).history.round_loss
    rounds = [3, 4, 5]
    snaps = trajectory.replay(config, rounds)
    assert [s.n for s in snaps] == rounds
    model = build_model(task, config.dataset, config.width)
    for snap in snaps:
        model.load_state_dict(snap.state)
        with torch.no_grad():
            assert float(batch_loss(task, model(snap.x), snap.y)) == pytest.approx(losses[snap.n], rel=1e-6)
    with pytest.raises(ValueError):
        trajectory.replay(config, [10_000])


@pytest.mark.parametrize("task,layer", [("autoencoder", 3), ("convnet", 2)])
def test_taylor_loss_touches_the_true_loss_with_its_slope(mnist_root, tiny_params, task, layer):
    config = run_config(tiny_params, task, "adam", tiny_params[f"lr_{task}_adam"])
    snaps = trajectory.replay(config, [2, 3, 4])
    model = build_model(task, config.dataset, config.width).double()
    for snap in snaps:
        snap.state = {k: v.double() for k, v in snap.state.items()}
        snap.x = snap.x.double() if snap.x.is_floating_point() else snap.x
        snap.y = snap.y.double() if snap.y.is_floating_point() else snap.y
    rows = trajectory.taylor_slice(model, snaps, task, Scale(layer), points=41)
    iterates = [r for r in rows if r["curve"] == "iterate"]
    assert [r["round"] for r in iterates] == [2, 3, 4]
    assert iterates[0]["s"] == 0.0 and iterates[-1]["off_axis"] < 1e-9  # the direction joins first and last
    d = trajectory.slice_direction(model, snaps, Scale(layer))
    for snap, it in zip(snaps, iterates):
        assert it["taylor"] == pytest.approx(it["loss"], rel=1e-12)
        assert it["slope_taylor"] == pytest.approx(it["slope_true"], rel=1e-9, abs=1e-14)
        # Independent check of the slope: a central difference of the true loss along the slice.
        model.load_state_dict(snap.state)
        theta, h = scale_vector(model, Scale(layer)).detach(), 1e-9  # small: a kink may lie near W_n
        loss = lambda t: float(per_sample_loss(task, functional_call(  # noqa: E731
            model, scale_parameters(model, Scale(layer), theta + t * d), (snap.x,)), snap.y).mean().detach())
        assert (loss(h) - loss(-h)) / (2 * h) == pytest.approx(it["slope_true"], rel=1e-4, abs=1e-8)
        # The Taylor loss is convex along the slice: second differences are >= 0.
        taylor = np.array([r["loss"] for r in rows if r["round"] == it["round"] and r["curve"] == "Taylor loss"])
        assert (np.diff(taylor, 2) >= -1e-12).all()
    # The true loss at each W_n is the incurred loss of that round.
    for snap, it in zip(snaps, iterates):
        model.load_state_dict(snap.state)
        with torch.no_grad():
            assert it["loss"] == pytest.approx(float(batch_loss(task, model(snap.x), snap.y)), rel=1e-12)

