"""Models: the paper's shapes, addressable units, and the clamped network at its own gates."""

from __future__ import annotations

import pytest
import torch

from ntaylor_lib.runs.models import autoencoder, build_model, convnet, relu_unit_count


def test_autoencoder_shapes_and_layers():
    net = autoencoder()
    assert [net.layer(l).out_features for l in range(1, 7)] == [50, 30, 20, 30, 50, 784]
    assert relu_unit_count(net, torch.zeros(1, 784)) == 50 + 30 + 20 + 30 + 50
    with pytest.raises(IndexError, match="layers 1..6"):
        net.layer(7)


@pytest.mark.parametrize("dataset,shape,side", [("mnist", (2, 1, 28, 28), 3), ("cifar10", (2, 3, 32, 32), 4)])
def test_convnet_for_both_inputs(dataset, shape, side):
    net = build_model("convnet", dataset, width=6)
    assert net(torch.randn(shape)).shape == (2, 10)
    assert net.layer(4).in_features == 6 * side * side
    trace = net.trace(torch.randn(shape))
    assert [m.shape[1:] for m in trace.masks()][:3] == [
        (6, shape[2], shape[3]), (6, shape[2] // 2, shape[3] // 2), (6, shape[2] // 4, shape[3] // 4)]
    assert all(trace.pool_indices[l] is not None for l in range(3)) and trace.pool_indices[3] is None


def test_trace_and_clamped_reproduce_forward():
    torch.manual_seed(0)
    net = convnet(in_channels=1, image_size=28, width=4)
    x = torch.randn(5, 1, 28, 28)
    trace = net.trace(x)
    assert torch.allclose(trace.output, net(x), atol=1e-6)
    assert torch.allclose(net.clamped(x, trace), net(x), atol=1e-6)
    # Clamped gates are frozen: other weights give a different function than the free network.
    with torch.no_grad():
        net.layer(1).weight.mul_(-1)
    assert not torch.allclose(net.clamped(x, trace), net(x), atol=1e-3)
