"""The MSE recorder: its streaming statistics equal those of the stacked per-sample Jacobians, its
optimum the batch least-squares one, whatever the chunking, the trace and the strides."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.optimize import lsq_linear
from torch import nn

from ntaylor_lib.runs.models import ReluNet
from ntaylor_lib.taylor.jacobians import Scale
from ntaylor_lib.taylor.recorders import Group, MSEStatsRecorder, mse
from tests.taylor.nets import dense_batches, drive, rows_at, rows_scale, small_nets


@pytest.mark.parametrize("traced", [False, True])  # own forward pass, or the training pass's trace
@pytest.mark.parametrize("factor_width", [128, 2])  # streaming statistics, and per-sample factors
@pytest.mark.parametrize("repeated", [False, True])
def test_streaming_mse_optimum_equals_batch_least_squares(factor_width, traced, repeated):
    """``repeated``: samples recorded again within a horizon (a minibatch seen twice in the first
    epoch, a sample twice in one minibatch), which the per-sample factors' Grams merge."""
    _, net, _ = small_nets()[0]
    batches = dense_batches(net)
    if repeated:
        batches[2] = batches[0]
        x, y = batches[4]
        batches[4] = (torch.cat([x[:3], x[:2]]), torch.cat([y[:3], y[:2]]))
    groups = [Group(2, [0, 1, 2, 3], True), Group(1, [1, 3], False), Group(3, [0, 6], False)]
    rec = MSEStatsRecorder(groups, box_scales=(1.0, math.inf), factor_width=factor_width)
    snaps = drive(rec, net, batches, "autoencoder", traced=traced)
    out = rec.arrays()
    k = net.layer(net.depth).out_features
    scales = [Scale(2), Scale(1, 1), Scale(1, 3), Scale(3, 0), Scale(3, 6)]
    for s, scale in enumerate(scales):
        assert out["labels"][s] == scale.label
        for e, rounds in enumerate((3, 6)):
            a, b = rows_at(net, snaps[:rounds], batches[:rounds], scale, "autoencoder")
            m = rounds * batches[0][0].shape[0] * k
            v = np.linalg.lstsq(a, b, rcond=None)[0]
            np.testing.assert_allclose(out["optimum"][s, 1, e], np.sum((a @ v - b) ** 2) / m, rtol=1e-7)
            thetas = np.stack([rows_scale(net, st, scale) for st in snaps])
            boxed = lsq_linear(a, b, bounds=(thetas.min(0) - 1e-15, thetas.max(0) + 1e-15), tol=1e-14, method="bvls").x
            np.testing.assert_allclose(out["optimum"][s, 0, e], np.sum((a @ boxed - b) ** 2) / m, rtol=1e-7)


DEEP_GROUPS = {
    # a whole layer away from the top (its Gram, and its neurons' diagonal from that Gram) and
    # neurons of every other layer
    "middle": [Group(3, [0, 1, 2], True), Group(3, [2, 0], False), Group(2, [1, 3], False), Group(4, [2], False),
               Group(5, [0, 4], False), Group(6, [7, 1], False)],
    # the top hidden layer whole (its Gram without a factor step) and the input layer's neurons
    "top": [Group(5, list(range(5)), True), Group(1, [0, 4], False), Group(4, [0, 1, 2, 3], False)],
    # the profiles' shape: the input layer's neurons as per-sample factors on every 2nd round
    # (factor_width 6 < Q = 7), below groups that need every round
    "strided": [Group(3, [0, 1, 2], True), Group(1, [0, 4], False), Group(2, [1, 3], False), Group(4, [2], False),
                Group(6, [7, 1], False)],
}


@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("groups", list(DEEP_GROUPS))
def test_streaming_mse_statistics_on_a_deep_autoencoder_shaped_net_equal_the_stacked_jacobians(groups, traced,
                                                                                                 monkeypatch):
    """Depth 6 with more outputs than the last hidden layer (the Cholesky output factor), so each
    Gram comes from the folded first step: ``H``, ``g`` and ``s`` of every scale and horizon equal
    ``A^T A``, ``A^T b`` and ``b^T b`` of the stacked per-sample Jacobians, with the recorder's own
    forward pass and with the training pass's trace and gradients. (The statistics, not the
    optimum: on such small random problems ``H`` has eigenvalues near 1e-12 of its largest, where
    the solver's pseudo-inverse and ``lstsq`` legitimately disagree.)"""
    torch.manual_seed(4)
    sizes = (6, 5, 4, 3, 4, 5, 8)
    net = ReluNet([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]).double()
    batches = dense_batches(net, rounds=4, n=6, seed=5)
    if traced:  # the recorder must not fall back on a forward pass of its own
        monkeypatch.setattr(mse, "stacked_trace", lambda *args: pytest.fail("forward pass repeated"))
    stride = 2 if groups == "strided" else 1
    groups = DEEP_GROUPS[groups]
    rec = MSEStatsRecorder(groups, box_scales=(math.inf,), chunk_rounds=3, solve_at_end=False,
                           factor_width=6 if stride > 1 else 128, input_stride=stride)
    snaps = drive(rec, net, batches, "autoencoder", traced=traced)
    assert any(rec.factor) == (stride > 1)
    for i, g in enumerate(groups):
        scales = [Scale(g.layer)] if g.joint else [Scale(g.layer, a) for a in g.neurons]
        for e, (h, gv, s, count, _) in enumerate(rec._horizon_stats(i)):
            used = [n for n in range(2 * (e + 1)) if not rec.factor[i] or n % stride == 0]
            assert float(count[0]) == len(used) * batches[0][0].shape[0]
            hs, gs = (h[None], gv[None]) if g.joint else (h, gv)
            for j, scale in enumerate(scales):
                a, b = rows_at(net, [snaps[n] for n in used], [batches[n] for n in used], scale, "autoencoder")
                # per-sample factor rows keep x~ in float32 (their memory grows with the rounds)
                rtol, atol = (1e-6, 1e-9) if rec.factor[i] else (1e-10, 1e-12)
                np.testing.assert_allclose(hs[j].numpy(), a.T @ a, rtol=rtol, atol=atol, err_msg=scale.label)
                np.testing.assert_allclose(gs[j].numpy(), a.T @ b, rtol=rtol, atol=atol, err_msg=scale.label)
                np.testing.assert_allclose(float(s[j] if not g.joint else s[0]), b @ b, rtol=rtol, err_msg=scale.label)


@pytest.mark.parametrize("traced", [False, True])
def test_input_stride_groups_alone_use_their_rounds(traced):
    """With only per-sample-factor groups, every layer is computed on the strided rounds alone."""
    _, net, _ = small_nets()[0]
    batches = dense_batches(net, rounds=8)
    rec = MSEStatsRecorder([Group(1, [1, 3], False)], box_scales=(math.inf,), factor_width=6, input_stride=2,
                           chunk_rounds=3)
    snaps = drive(rec, net, batches, "autoencoder", traced=traced)
    out = rec.arrays()
    k = net.layer(net.depth).out_features
    for j, scale in enumerate((Scale(1, 1), Scale(1, 3))):
        for e, last in enumerate((4, 8)):
            used = [n for n in range(last) if n % 2 == 0]
            a, b = rows_at(net, [snaps[n] for n in used], [batches[n] for n in used], scale, "autoencoder")
            v = np.linalg.lstsq(a, b, rcond=None)[0]
            m = len(used) * batches[0][0].shape[0] * k
            np.testing.assert_allclose(out["optimum"][j, 0, e], np.sum((a @ v - b) ** 2) / m, rtol=1e-7)


def test_each_group_solved_alone_gives_the_rows_of_the_whole_solve():
    """``for_group(i).solve()`` (used to time groups one by one) equals group i's rows of ``solve()``."""
    _, net, _ = small_nets()[0]
    groups = [Group(2, [0, 1, 2, 3], True), Group(1, [1, 3], False), Group(3, [0, 6], False)]
    rec = MSEStatsRecorder(groups, box_scales=(1.0, math.inf), factor_width=2)
    drive(rec, net, dense_batches(net), "autoencoder")
    whole, row = rec.arrays(), 0
    for i, g in enumerate(groups):
        sub = rec.for_group(i)
        sub.solve()
        part = sub.arrays()
        count = len(g.labels())
        np.testing.assert_array_equal(part["labels"], whole["labels"][row : row + count])
        np.testing.assert_allclose(part["optimum"], whole["optimum"][row : row + count], rtol=1e-12)
        row += count
    first = rec.for_group(1, neurons=1)
    first.solve()
    assert list(first.arrays()["labels"]) == ["layer1/neuron1"]
    np.testing.assert_allclose(first.arrays()["optimum"][0], whole["optimum"][1], rtol=1e-12)
    # the first neurons of a group kept as statistics (not per-sample factors), hidden and output
    rec = MSEStatsRecorder([Group(2, [0, 2, 3], False), Group(3, [0, 4, 6], False)], box_scales=(1.0, math.inf))
    drive(rec, net, dense_batches(net), "autoencoder")
    whole = rec.arrays()
    for i, row in ((0, 0), (1, 3)):
        first = rec.for_group(i, neurons=2)
        first.solve()
        np.testing.assert_array_equal(first.arrays()["labels"], whole["labels"][row : row + 2])
        np.testing.assert_allclose(first.arrays()["optimum"], whole["optimum"][row : row + 2], rtol=1e-12)


@pytest.mark.parametrize("traced", [False, True])  # (traced: the chunk buffers are reused, chunk after chunk)
def test_chunked_statistics_equal_round_by_round_and_strided_factors_use_their_rounds(traced):
    """Buffering rounds changes nothing; neurons on the input stride are solved from their rounds only."""
    _, net, _ = small_nets()[0]
    batches = dense_batches(net, rounds=8)
    groups = [Group(2, [0, 1, 2, 3], True), Group(1, [1, 3], False), Group(2, [0, 2], False), Group(3, [0, 6], False)]
    out = {}
    for chunk in (1, 3, 8):
        rec = MSEStatsRecorder(groups, box_scales=(math.inf,), factor_width=6, input_stride=2, chunk_rounds=chunk)
        trained = copy.deepcopy(net)
        snaps = drive(rec, trained, batches, "autoencoder", traced=traced)
        out[chunk] = rec.arrays()
    for chunk in (3, 8):
        np.testing.assert_allclose(out[chunk]["optimum"], out[1]["optimum"], rtol=1e-10)
        np.testing.assert_array_equal(out[chunk]["samples_used"], out[1]["samples_used"])
    k = net.layer(net.depth).out_features
    for e, last in enumerate((4, 8)):
        used = [n for n in range(last) if n % 2 == 0]
        a, b = rows_at(trained, [snaps[n] for n in used], [batches[n] for n in used], Scale(1, 1), "autoencoder")
        v = np.linalg.lstsq(a, b, rcond=None)[0]
        m = len(used) * batches[0][0].shape[0] * k
        assert out[8]["labels"][1] == "layer1/neuron1"
        np.testing.assert_allclose(out[8]["optimum"][1, 0, e], np.sum((a @ v - b) ** 2) / m, rtol=1e-7)


@pytest.mark.parametrize("traced", [False, True])
def test_statistics_of_a_float32_network_are_positive_semidefinite_to_float64_rounding(traced):
    """A float32 network's statistics are sums of per-sample ``w x~ x~^T`` (and ``(x~ x~^T) kron Gram``),
    each positive semidefinite: formed in float64 from the float32 factors (whose products are exact
    there) the sums stay so to float64 rounding, even where the inputs are linearly dependent (here
    ``x_2 = x_0 + x_1``, as a dead or duplicated unit below makes them). Formed in float32 they came out
    indefinite at about 1e-8 of their largest eigenvalue, and the box QPs then stalled."""
    torch.manual_seed(0)
    net = ReluNet([nn.Linear(6, 8), nn.Linear(8, 5), nn.Linear(5, 6)])
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(40):
        x = torch.randn(64, 6, generator=g)
        x[:, 2] = x[:, 0] + x[:, 1]
        batches.append((x, torch.randn(64, 6, generator=g)))
    groups = [Group(1, list(range(8)), False), Group(2, list(range(5)), True), Group(3, [0, 5], False)]
    rec = MSEStatsRecorder(groups, box_scales=(1.0,), solve_at_end=False, chunk_rounds=8)
    drive(rec, net, batches, "autoencoder", epochs=2, lr=0.01, traced=traced)
    for i in range(len(groups)):
        for stats in rec._horizon_stats(i):
            h = stats[0].reshape(-1, *stats[0].shape[-2:])
            lam = torch.linalg.eigvalsh(h)
            assert bool((lam[:, 0] >= -1e-12 * lam[:, -1]).all()), (groups[i], lam[:, 0] / lam[:, -1])
