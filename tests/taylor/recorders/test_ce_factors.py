"""The cross-entropy factor recorder: its optima match SciPy on the same Taylor losses and the true
optimum of a model linear in its weights."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn

from ntaylor_lib.runs.models import ReluNet
from ntaylor_lib.taylor.jacobians import Scale
from ntaylor_lib.taylor.linearize import taylor_loss
from ntaylor_lib.taylor.recorders import CEFactorRecorder, Group
from tests.taylor.nets import conv_batches, drive, rows_scale, small_nets


def test_cross_entropy_optimum_matches_scipy_and_beats_every_iterate():
    _, net, x = small_nets()[1]
    batches = conv_batches(net, x)
    groups = [Group(2, [0, 2], False), Group(3, [1, 4], False), Group(1, [0, 1, 2], True)]
    rec = CEFactorRecorder(groups, stride=1, box_scales=(1.0,), dtype=torch.float64, tol=1e-13)
    snaps = drive(rec, net, batches, "convnet", lr=0.5)
    out = rec.arrays()
    scales = [Scale(2, 0), Scale(2, 2), Scale(3, 1), Scale(3, 4), Scale(1)]
    for s, scale in enumerate(scales):
        thetas = np.stack([rows_scale(net, st, scale) for st in snaps])
        losses = []
        for state, (xb, yb) in zip(snaps, batches):
            net.load_state_dict(state)
            losses.append(taylor_loss(net, scale, xb, yb, "convnet"))

        def objective(v, rounds=6):
            t = torch.as_tensor(v).requires_grad_(True)
            value = sum(f(t) for f in losses[:rounds]) / rounds
            return float(value.detach()), torch.autograd.grad(value, t)[0].numpy()

        ref = minimize(objective, thetas[-1], jac=True, method="L-BFGS-B",
                       bounds=list(zip(thetas.min(0), thetas.max(0))),
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
        got = out["optimum"][s, 0, -1]
        assert abs(got - ref.fun) <= 1e-6 * abs(ref.fun), (scale.label, got, ref.fun)
        assert all(got <= objective(t)[0] + 1e-12 for t in thetas), scale.label


def test_linear_model_gives_the_true_hindsight_optimum():
    torch.manual_seed(3)
    net = ReluNet([nn.Linear(4, 3)]).double()  # linear in its weights: the Taylor loss is the loss
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
               for _ in range(4)]
    rec = CEFactorRecorder([Group(1, [0, 1, 2], True)], box_scales=(math.inf,), dtype=torch.float64, tol=1e-14)
    drive(rec, net, batches, "convnet", lr=0.1)
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])

    def true_loss(v):
        w = torch.as_tensor(v).view(3, 5).requires_grad_(True)
        value = torch.nn.functional.cross_entropy(xs @ w[:, :4].T + w[:, 4], ys)
        return float(value), torch.autograd.grad(value, w)[0].flatten().numpy()

    best = minimize(true_loss, np.zeros(15), jac=True, method="BFGS", options={"gtol": 1e-12})
    np.testing.assert_allclose(rec.arrays()["optimum"][0, 0, -1], best.fun, rtol=1e-7)
