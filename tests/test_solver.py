import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.optimize import lsq_linear, minimize
from torch import nn

from ntaylor_lib.jacobians import Scale, scale_jacobian, scale_vector
from ntaylor_lib.models import ReluNet
from ntaylor_lib import recorders
from ntaylor_lib.recorders import CEFactorRecorder, Group, MSEStatsRecorder
from ntaylor_lib.regret import loglog_slope, regret_table
from ntaylor_lib.taylor import taylor_loss
from ntaylor_lib.training import training_step

from taylor_nets import small_nets


def drive(recorder, net, batches, task, epochs=2, lr=0.05, traced=False):
    """Train ``net`` by SGD on ``batches`` (split into ``epochs``), calling the recorder's hooks
    as the training loop does (``traced``: with the forward trace and gradients handed over)."""
    recorder.setup(net, None, SimpleNamespace(epochs=epochs))
    recorder.on_epoch_end(0, net)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    snapshots, per_epoch = [], len(batches) // epochs
    for n, (x, y) in enumerate(batches):
        snapshots.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        recorder.on_round(n, net, x, y)
        training_step(task, net, opt, x, y, n, [recorder] if traced else [])
        if (n + 1) % per_epoch == 0:
            recorder.on_epoch_end((n + 1) // per_epoch, net)
    recorder.on_train_end(net, "complete")
    return snapshots


def rows_at(net, snapshots, batches, scale, task):
    """Stacked per-sample Jacobians and targets of every round (the batch least-squares problem)."""
    a_rows, b_rows = [], []
    for state, (x, y) in zip(snapshots, batches):
        net.load_state_dict(state)
        j = scale_jacobian(net, x, scale)  # (N, K, P)
        c = torch.einsum("nkp,p->nk", j, scale_vector(net, scale).detach()) - (net(x).detach() - y)
        a_rows.append(j.reshape(-1, j.shape[-1]))
        b_rows.append(c.reshape(-1))
    return torch.cat(a_rows).numpy(), torch.cat(b_rows).numpy()


def dense_batches(net, rounds=6, n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    d_in, d_out = net.layer(1).in_features, net.layer(net.depth).out_features
    return [(torch.randn(n, d_in, generator=g, dtype=torch.float64),
             torch.randn(n, d_out, generator=g, dtype=torch.float64)) for _ in range(rounds)]


@pytest.mark.parametrize("traced", [False, True])  # own forward pass, or the training pass's trace
@pytest.mark.parametrize("factor_width", [128, 2])  # streaming statistics, and per-sample factors
def test_streaming_mse_optimum_equals_batch_least_squares(factor_width, traced):
    _, net, _ = small_nets()[0]
    batches = dense_batches(net)
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
        monkeypatch.setattr(recorders, "_stacked_trace", lambda *args: pytest.fail("forward pass repeated"))
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


def rows_scale(net, state, scale):
    net.load_state_dict(state)
    return scale_vector(net, scale).detach().numpy()


def conv_batches(net, x, rounds=6, seed=2):
    g = torch.Generator().manual_seed(seed)
    k = net(x).shape[1]
    return [(torch.randn(x.shape, generator=g, dtype=torch.float64), torch.randint(0, k, (x.shape[0],), generator=g))
            for _ in range(rounds)]


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

        ref = minimize(objective, thetas[-1], jac=True, method="L-BFGS-B", bounds=list(zip(thetas.min(0), thetas.max(0))),
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


def test_regret_table_and_slope():
    arrays = {"labels": np.array(["layer1"]), "layer": np.array([1]), "neuron": np.array([-1]),
              "box_scales": np.array([1.0]), "horizons": np.array([4, 16]), "optimum": np.array([[[0.5, 0.25]]]),
              "samples_used": np.array([[4, 16]]), "recorded_loss": np.array([[1.0, 0.5]])}
    rows = regret_table(np.ones(16), arrays)
    assert [r["regret"] for r in rows] == [4 - 2.0, 16 - 4.0]
    assert rows[1]["regret_sqrt"] == pytest.approx(12 / 4)
    n = np.array([10, 100, 1000.0])
    assert loglog_slope(n, 3 * np.sqrt(n)) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(6))
def test_box_quadratic_matches_bvls_on_random_problems(seed):
    """Projected Newton against SciPy's exact active-set BVLS, on full-rank and rank-deficient H."""
    from ntaylor_lib.solver import QuadraticProblem, solve_quadratic

    rng = np.random.default_rng(seed)
    p, m = 30, (60 if seed % 2 == 0 else 12)  # odd seeds: H = A^T A has rank 12 < 30
    a, b = rng.normal(size=(m, p)), rng.normal(size=m)
    lo = rng.normal(size=p) * 0.1 - 0.2
    hi = lo + rng.uniform(0.05, 0.4, size=p)
    problem = QuadraticProblem(a.T @ a, a.T @ b, float(b @ b), float(m))
    start = rng.uniform(lo, hi) if seed % 3 == 0 else None
    v, value = solve_quadratic(problem, (lo, hi), start=start)
    assert np.all(v >= lo) and np.all(v <= hi)
    reference = lsq_linear(a, b, bounds=(lo, hi), method="bvls", tol=1e-14).x
    expected = float(np.sum((a @ reference - b) ** 2) / m)
    np.testing.assert_allclose(value, expected, rtol=1e-9)


def test_box_quadratic_with_unseen_weights_and_one_point_boxes_matches_bvls(monkeypatch):
    """Weights with a zero column (an input pixel that is always zero) and weights whose box
    is one point (such a pixel's weight never moves in training): the optimum is BVLS's on
    the other weights, and the active-set method settles without the projected-Newton fallback."""
    import ntaylor_lib.solver as solver

    rng = np.random.default_rng(5)
    p, m = 40, 120
    a, b = rng.normal(size=(m, p)), rng.normal(size=m)
    unseen = np.arange(p) % 5 == 0
    a[:, unseen] = 0.0
    lo = rng.normal(size=p) * 0.1 - 0.1
    hi = lo + rng.uniform(0.02, 0.2, size=p)
    point = (np.arange(p) % 10 == 0) | (np.arange(p) % 7 == 3)  # some unseen (every 10th), some seen
    hi[point] = lo[point]
    problem = solver.QuadraticProblem(a.T @ a, a.T @ b, float(b @ b), float(m))
    outcomes = []
    real = solver._active_set_qp
    monkeypatch.setattr(solver, "_active_set_qp", lambda *args, **kw: outcomes.append(real(*args, **kw)) or outcomes[-1])
    v, value = solver.solve_quadratic(problem, (lo, hi))
    assert outcomes and all(o is not None for o in outcomes)
    assert np.all(v >= lo) and np.all(v <= hi) and np.array_equal(v[point], lo[point])
    free = ~point
    reference = lsq_linear(a[:, free], b - a[:, point] @ lo[point], bounds=(lo[free], hi[free]), method="bvls",
                           tol=1e-14).x
    expected = float(np.sum((a[:, free] @ reference - (b - a[:, point] @ lo[point])) ** 2) / m)
    np.testing.assert_allclose(value, expected, rtol=1e-9)


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


@pytest.mark.parametrize("rows", [1, 5, 70])  # the fused loop, and the two passes above 64 rows
def test_column_square_norms(rows):
    f = torch.randn(3, rows, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(recorders._column_square_norms(f), (f * f).sum(1))
