"""Figure 1's kink counting."""

from __future__ import annotations

import torch

from ntaylor_lib.exploration import shattered


def test_depth_one_kinks_equal_breakpoints_in_range():
    """One hidden layer: unit i switches exactly once, at x = -b_i / w_i."""
    net = shattered.random_relu_net(depth=1, width=12, seed=3)
    w, b = net.layer(1).weight.detach().squeeze(1), net.layer(1).bias.detach()
    xs = torch.linspace(-2, 2, 20001, dtype=torch.float64)
    breakpoints = (-b / w)
    inside = int(((breakpoints > -2) & (breakpoints < 2)).sum())
    assert shattered.count_kinks(net, xs) == inside


def test_gradient_matches_finite_differences_and_jumps_need_kinks():
    net = shattered.random_relu_net(depth=4, width=8, seed=0)
    xs = torch.linspace(-2, 2, 4001, dtype=torch.float64)
    values, gradients = shattered.function_and_gradient(net, xs)
    slopes = (values[1:] - values[:-1]) / (xs[1:] - xs[:-1])
    same_piece = ~(shattered.activation_patterns(net, xs)[1:] != shattered.activation_patterns(net, xs)[:-1]).any(1)
    torch.testing.assert_close(slopes[same_piece], gradients[:-1][same_piece], rtol=1e-6, atol=1e-8)
    assert 0 < shattered.count_gradient_jumps(gradients) <= shattered.count_kinks(net, xs)
