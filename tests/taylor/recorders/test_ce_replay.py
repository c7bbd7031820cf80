"""The replay recorder: whole layers under cross-entropy from weight snapshots."""

import copy
import math
from types import SimpleNamespace

import numpy as np
import torch

from ntaylor_lib.taylor.jacobians import Scale, scale_jacobian, scale_vector
from ntaylor_lib.taylor.recorders import CEFactorRecorder, Group
from ntaylor_lib.taylor.recorders.ce_replay import CEReplayRecorder, replayed_round
from tests.taylor.nets import conv_batches, drive, small_nets


def test_replayed_round_is_the_taylor_approximation():
    """offset + J theta^n = f(theta^n); apply and adjoint equal the structured Jacobian's products."""
    _, net, x = small_nets()[1]
    flat = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    g = torch.Generator().manual_seed(5)
    for l in range(1, net.depth + 1):
        offset, apply, adjoint, theta = replayed_round(copy.deepcopy(net), flat, l, x)
        j = scale_jacobian(net, x, Scale(l)).flatten(0, 1)  # (N K, P)
        torch.testing.assert_close(theta, scale_vector(net, Scale(l)).detach())
        torch.testing.assert_close(offset + apply(theta), net(x).detach(), rtol=1e-10, atol=1e-12)
        v = torch.randn(theta.shape, generator=g, dtype=theta.dtype)
        r = torch.randn(offset.shape, generator=g, dtype=theta.dtype)
        torch.testing.assert_close(apply(v).flatten(), j @ v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(adjoint(r), j.T @ r.flatten(), rtol=1e-10, atol=1e-12)


def test_replay_optimum_equals_the_stored_jacobian_optimum():
    """Whole conv layers (with max-pooling after them).

    Replayed snapshots give the optimum that stored Jacobians give.
    """
    _, net, x = small_nets()[1]
    batches = conv_batches(net, x)
    for l in (1, 2):
        groups = [Group(l, list(range(net.layer(l).out_channels)), True)]
        stored = CEFactorRecorder(groups, stride=2, box_scales=(1.0, math.inf), dtype=torch.float64, tol=1e-13)
        replay = CEReplayRecorder(groups, stride=2, box_scales=(1.0, math.inf), tol=1e-13)
        drive(stored, copy.deepcopy(net), batches, "convnet", lr=0.5)
        drive(replay, copy.deepcopy(net), batches, "convnet", lr=0.5)
        a, b = stored.arrays(), replay.arrays()
        np.testing.assert_allclose(b["optimum"], a["optimum"], rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(b["samples_used"], a["samples_used"])
        np.testing.assert_allclose(b["recorded_loss"], a["recorded_loss"], rtol=1e-6)


def test_indices_replay_the_minibatch_and_state_resumes():
    """Given the batch indices, the recorder keeps indices only, and replays exactly those examples."""
    _, net, x = small_nets()[1]
    pool = torch.randn(20, *x.shape[1:], dtype=torch.float64)
    labels = torch.randint(0, 3, (20,))
    data = SimpleNamespace(train_x=pool, train_y=labels)
    rec = CEReplayRecorder([Group(2, list(range(4)), True)], stride=1, samples=3)
    rec.setup(net, data, SimpleNamespace(epochs=1, device="cpu"))
    index = torch.tensor([7, 2, 11, 5])
    rec.on_batch(0, index)
    rec.on_round(0, net, pool[index], labels[index])
    assert rec.batches[0].dtype == torch.int64 and rec.batches[0].tolist() == [7, 2, 11]
    ex, ey = rec._examples(0)
    torch.testing.assert_close(ex, pool[index[:3]])
    assert ey.tolist() == labels[index[:3]].tolist()
    rec.on_round(1, net, pool[index], labels[index])  # no indices this round: keeps the examples themselves
    torch.testing.assert_close(rec._examples(1)[0], pool[index[:3]])
    rec.on_epoch_end(1, net)
    resumed = CEReplayRecorder([Group(2, list(range(4)), True)], stride=1, samples=3)
    resumed.load_state_dict(copy.deepcopy(rec.state_dict()))
    resumed.setup(net, data, SimpleNamespace(epochs=1, device="cpu"))
    rec.solve()
    resumed.solve()
    np.testing.assert_array_equal(resumed.arrays()["optimum"], rec.arrays()["optimum"])
