import pytest
import torch

from ntaylor_lib.taylor.jacobians import scale_vector
from ntaylor_lib.taylor.linearize import clamped_output, linearize, taylor_approximation, taylor_loss
from tests.taylor.nets import all_scales, small_nets


def targets(name, net, x):
    out = net(x)
    if name == "dense":
        return "autoencoder", torch.randn_like(out)
    return "convnet", torch.randint(0, out.shape[1], (x.shape[0],))


@pytest.mark.parametrize("name,net,x", small_nets())
def test_taylor_loss_value_and_gradient_at_theta_n(name, net, x):
    from ntaylor_lib.runs.losses import batch_loss

    task, y = targets(name, net, x)
    for scale in all_scales(net):
        theta = scale_vector(net, scale).detach().clone().requires_grad_(True)
        value = taylor_loss(net, scale, x, y, task)(theta)
        (grad,) = torch.autograd.grad(value, theta)
        net.zero_grad()
        loss = batch_loss(task, net(x), y)
        loss.backward()
        backprop = torch.cat([
            torch.cat([net.layer(l).weight.grad.flatten(1), net.layer(l).bias.grad[:, None]], 1)[idx].flatten()
            for l, idx in scale.blocks(net)
        ])
        torch.testing.assert_close(value, loss.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, backprop, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,net,x", small_nets())
def test_clamped_network_equals_taylor_approximation_for_random_v(name, net, x):
    for scale in all_scales(net)[1:]:  # layer and neuron scales (Observation 2)
        theta = scale_vector(net, scale).detach()
        for _ in range(3):
            v = theta + torch.randn_like(theta)
            torch.testing.assert_close(clamped_output(net, scale, v, x), taylor_approximation(net, scale, v, x))


@pytest.mark.parametrize("name,net,x", small_nets())
def test_linearize_is_affine_and_exact_at_theta(name, net, x):
    for scale in all_scales(net):
        t = linearize(net, scale)
        theta = scale_vector(net, scale).detach()
        torch.testing.assert_close(t(theta, x), net(x).detach())
        d = torch.randn_like(theta)
        torch.testing.assert_close(t(theta + 2 * d, x) - t(theta + d, x), t(theta + d, x) - t(theta, x))
