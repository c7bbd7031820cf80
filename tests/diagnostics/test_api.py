"""The diagnostics API on any Sequential: the same optima as the book's recorders on the paper's kinds of
network, per-sample Jacobians equal to torch.func.jacrev on every supported module type, the
Taylor loss equal to the loss at the expansion point, and clear errors for what it cannot take."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev

from ntaylor_lib.diagnostics import SUPPORTED, UnsupportedModule, attach
from ntaylor_lib.diagnostics.sequential import as_sequential, modules_of, output_by_preactivation, trace, weight_layers
from ntaylor_lib.runs.profiles import ParameterError
from ntaylor_lib.taylor.jacobians import RULES
from ntaylor_lib.taylor.recorders import CEFactorRecorder, Group, MSEStatsRecorder
from ntaylor_lib.taylor.solver import QuadraticProblem
from tests.taylor.nets import conv_batches, dense_batches, drive, small_nets


def _sequential_of(net) -> nn.Sequential:
    return as_sequential(copy.deepcopy(net))


def _train(diag, model, batches, epochs, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    per_epoch = len(batches) // epochs
    for n, (x, y) in enumerate(batches):
        opt.zero_grad()
        diag.step(x, y).backward()
        opt.step()
        if (n + 1) % per_epoch == 0:
            diag.epoch_end()


def test_mse_optima_equal_the_book_recorder_on_a_dense_relu_net():
    _, net, _ = small_nets()[0]
    batches = dense_batches(net, rounds=8)
    groups = [Group(2, [0, 1, 2, 3], True), Group(1, [1, 3], False), Group(3, [0, 6], False)]
    book = MSEStatsRecorder(groups, box_scales=(1.0, math.inf))
    drive(book, copy.deepcopy(net), batches, "autoencoder", epochs=2)
    model = _sequential_of(net)
    diag = attach(model, "mse", ["layer:2", "neurons:1:1,3", "neurons:3:0,6"], box_scales=(1.0, math.inf))
    _train(diag, model, batches, epochs=2, lr=0.05)
    ours, theirs = diag.arrays(), book.arrays()
    assert list(ours["labels"]) == list(theirs["labels"])
    np.testing.assert_array_equal(ours["horizons"], theirs["horizons"])
    np.testing.assert_allclose(ours["optimum"], theirs["optimum"], rtol=1e-9)
    np.testing.assert_allclose(ours["recorded_loss"], theirs["recorded_loss"], rtol=1e-12)


def test_cross_entropy_optima_equal_the_book_recorder_on_a_conv_net_with_pooling():
    _, net, x = small_nets()[1]
    batches = conv_batches(net, x, rounds=8)
    groups = [Group(2, [0, 2], False), Group(1, [0, 1, 2], True), Group(3, list(range(5)), True)]
    book = CEFactorRecorder(groups, stride=2, box_scales=(1.0, math.inf), dtype=torch.float64, tol=1e-13)
    drive(book, copy.deepcopy(net), batches, "convnet", epochs=2, lr=0.5)
    model = _sequential_of(net)
    diag = attach(model, "cross_entropy", ["neurons:2:0,2", "layer:1", "layer:3"], box_scales=(1.0, math.inf),
                  stride=2, tol=1e-13)
    _train(diag, model, batches, epochs=2, lr=0.5)
    ours, theirs = diag.arrays(), book.arrays()
    assert list(ours["labels"]) == list(theirs["labels"])
    np.testing.assert_allclose(ours["optimum"], theirs["optimum"], rtol=1e-7)
    rows = diag.regret_table()
    assert {r["scale"] for r in rows} == set(theirs["labels"]) and all(np.isfinite(r["regret"]) for r in rows)


def _every_module_net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.LeakyReLU(0.1),
        nn.Sequential(nn.AvgPool2d(2, stride=1), nn.Conv2d(3, 4, 2, padding=2, dilation=2)),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(64, 6),
        nn.Identity(),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).double()


def test_every_supported_module_type_appears_in_the_test_network():
    present = {type(m) for m in modules_of(_every_module_net())} | {nn.Sequential}
    assert set(SUPPORTED) <= present


def _layer_jacobians(modules, t, l):
    layer = modules[weight_layers(modules)[l - 1]]
    g = output_by_preactivation(modules, t, l)
    inputs = t.inputs[l - 1].detach()
    return torch.einsum("nkc,nq->nkcq", g, F.pad(inputs, (0, 1), value=1.0)) if isinstance(layer, nn.Linear) \
        else RULES[type(layer)](layer, inputs, g)


def test_per_sample_jacobians_equal_jacrev_on_every_supported_module_type():
    model = _every_module_net().eval()  # dropout off: the network is a plain function of its weights
    modules = modules_of(model)
    x = torch.randn(5, 2, 11, 11, dtype=torch.float64)
    t = trace(modules, x)
    torch.testing.assert_close(t.output, model(x))
    for l, position in enumerate(weight_layers(modules), start=1):
        layer = modules[position]
        name = next(n for n, m in model.named_modules() if m is layer)
        params = dict(model.named_parameters())

        def f(w, b, xi):
            return functional_call(model, {**params, f"{name}.weight": w, f"{name}.bias": b}, (xi[None],))[0]

        jw, jb = torch.vmap(jacrev(f, argnums=(0, 1)), in_dims=(None, None, 0))(layer.weight, layer.bias, x)
        reference = torch.cat([jw.flatten(3), jb[..., None]], dim=3)  # (N, K, C, Q) as layer_matrix lays it out
        torch.testing.assert_close(_layer_jacobians(modules, t, l), reference, rtol=1e-10, atol=1e-12)


def test_with_dropout_on_the_recorded_jacobians_are_those_of_the_pass_the_optimizer_steps_on():
    """In training mode the loss that step() returns is backpropagated: its gradient must be
    ``sum_n J_n^T dL/df_n`` with the recorded Jacobians (dropout masks and all)."""
    model = _every_module_net().train()
    modules = modules_of(model)
    x, y = torch.randn(6, 2, 11, 11, dtype=torch.float64), torch.randint(0, 3, (6,))
    t = trace(modules, x)
    loss = F.cross_entropy(t.output, y)
    dl_df = torch.autograd.grad(loss, t.output, retain_graph=True)[0]
    for l, position in enumerate(weight_layers(modules), start=1):
        layer = modules[position]
        gw, gb = torch.autograd.grad(loss, (layer.weight, layer.bias), retain_graph=True)
        from_jacobians = torch.einsum("nkcq,nk->cq", _layer_jacobians(modules, t, l), dl_df)
        torch.testing.assert_close(from_jacobians, torch.cat([gw.flatten(1), gb[:, None]], 1), rtol=1e-10,
                                   atol=1e-12)


def test_the_taylor_loss_at_the_expansion_point_is_the_round_loss():
    _, net, _ = small_nets()[0]
    (x, y), = dense_batches(net, rounds=1)
    model = _sequential_of(net)
    diag = attach(model, "mse", ["network", "layer:2", "neurons:1"])
    diag.step(x, y)
    for i, spec in enumerate(diag.scales):
        st, theta = diag.stats[i], diag._theta(spec).numpy()
        for u in range(theta.shape[0]):
            q = QuadraticProblem(st["h"][u].numpy(), st["g"][u].numpy(), float(st["s"][u]),
                                 float(st["count"][0]) * diag.outputs)
            assert q.value(theta[u]) == pytest.approx(diag.round_loss[0], rel=1e-10)


def test_exploration_metrics_from_the_probe():
    _, net, _ = small_nets()[0]
    batches = dense_batches(net, rounds=6)
    model = _sequential_of(net)
    probe = torch.randn(9, 6, dtype=torch.float64)
    diag = attach(model, "mse", ["layer:1"], probe=probe)
    _train(diag, model, batches, epochs=3, lr=0.2)
    out = diag.exploration()
    assert out["novelty"].shape == (4,) and out["switches"].shape == (9,)
    assert set(out["summary"]) == {"novelty", "switches", "volume"}
    slope_rows = diag.slopes()
    assert [r["scale"] for r in slope_rows] == ["layer1"]


def test_exploration_alone_records_the_same_configurations_and_losses_as_the_whole_diagnostics():
    """With no scale, the plain forward pass drives the same training: same round losses, same
    configurations; asking it for regret is refused."""
    _, net, _ = small_nets()[0]
    batches = dense_batches(net, rounds=6)
    probe = torch.randn(9, 6, dtype=torch.float64)
    whole_model, alone_model = _sequential_of(net), _sequential_of(net)
    whole = attach(whole_model, "mse", ["layer:1"], probe=probe)
    alone = attach(alone_model, "mse", [], probe=probe)
    _train(whole, whole_model, batches, epochs=3, lr=0.2)
    _train(alone, alone_model, batches, epochs=3, lr=0.2)
    assert alone.round_loss == pytest.approx(whole.round_loss, rel=1e-12)
    assert all(np.array_equal(a, b) for a, b in zip(alone.configurations, whole.configurations))
    assert alone.exploration()["summary"] == whole.exploration()["summary"]
    with pytest.raises(ParameterError, match="no Taylor scale"):
        alone.regret_table()


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)), "BatchNorm1d.*supported: Linear"),
    (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), "Tanh"),
    (nn.Linear(3, 2), "nn.Sequential, not Linear"),
    (nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2)), "no bias"),
    (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(2, 2)), "groups=1"),
    (nn.Sequential(nn.ReLU()), "no Linear or Conv2d"),
])
def test_an_unsupported_model_gets_a_message_that_names_it(model, match):
    with pytest.raises(UnsupportedModule, match=match):
        attach(model, "mse", ["layer:1"])


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "hinge"}, "loss='hinge'"),
    ({"scales": ["layer:9"]}, "weight layers 1..3"),
    ({"scales": ["neurons:1:7"]}, "units 0..4"),
    ({"scales": ["everything"]}, "is not one of"),
    ({"scales": []}, "scales is empty"),
    ({"box_scales": (0.0,)}, "box_scales"),
    ({"stride": 0}, "stride"),
    ({"horizons": "log:3"}, "needs epochs"),
    ({"scales": ["network"], "max_parameters": 10}, "max_parameters=10"),
])
def test_bad_settings_are_refused_before_training(kwargs, match):
    _, net, _ = small_nets()[0]
    args = {"loss": "mse", "scales": ["layer:1"], **kwargs}
    with pytest.raises(ParameterError, match=match):
        attach(_sequential_of(net), **args)


def test_layer_exploration_is_the_metrics_of_each_layers_own_units():
    """Per-layer novelty and switches against the definitions on each layer's slice of the configuration."""
    from ntaylor_lib.exploration.metrics import novelty_reference, switches_reference

    _, net, _ = small_nets()[0]
    model = _sequential_of(net)
    probe = torch.randn(7, 6, dtype=torch.float64)
    diag = attach(model, "mse", ["layer:1"], probe=probe)
    _train(diag, model, dense_batches(net, rounds=6), epochs=3, lr=0.3)
    configs = np.stack([np.unpackbits(c, axis=-1, count=9).astype(bool) for c in diag.configurations])
    rows = diag.layer_exploration()
    assert [r["units"] for r in rows] == [5, 4]
    for r, part in zip(rows, (configs[..., :5], configs[..., 5:])):
        assert r["novelty"] == pytest.approx(np.nanmean(novelty_reference(part)[1:]))
        assert r["switches"] == pytest.approx(np.mean(switches_reference(part)))


def test_a_book_network_as_a_sequential_is_the_same_function():
    for _, net, x in small_nets():
        torch.testing.assert_close(as_sequential(net)(x), net(x), rtol=0, atol=0)
