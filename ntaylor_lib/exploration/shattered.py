"""Shattered gradients (Figure 1): a deep ReLU net on a 1-D input is piecewise linear,
and its gradient jumps wherever the activation configuration changes.

Along a grid ``x_0 < x_1 < ...`` the gradient ``f'(x)`` is constant on each linear piece,
so the number of kinks crossed between two grid points is at least 1 whenever the
activation pattern of the two points differs. :func:`count_kinks` counts those pattern
changes (exact for a fine enough grid: at most one kink between neighbours);
:func:`count_gradient_jumps` counts changes of ``f'`` itself, which must agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.func import jvp

from ..runs.models import ReluNet


def random_relu_net(depth: int, width: int, seed: int, bias_std: float = 0.1) -> ReluNet:
    """A dense ReLU net ``1 -> width -> ... -> width -> 1`` with ``depth`` hidden layers and He-normal weights.

    He initialisation (``W ~ N(0, 2 / fan_in)``) keeps the signal's scale through depth,
    as in Balduzzi et al. (2017), "The shattered gradients problem".
    """
    if depth < 1 or width < 1:
        raise ValueError("depth and width must be >= 1")
    generator = torch.Generator().manual_seed(seed)
    sizes = [1] + [width] * depth + [1]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layer = nn.Linear(fan_in, fan_out).double()
        with torch.no_grad():
            weight = torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64)
            layer.weight.copy_(weight * math.sqrt(2.0 / fan_in))
            layer.bias.copy_(torch.randn(fan_out, generator=generator, dtype=torch.float64) * bias_std)
        layers.append(layer)
    return ReluNet(layers)


def function_and_gradient(net: ReluNet, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(x)`` and ``f'(x)`` at every grid point ``xs`` (shape ``(N,)``).

    The input is 1-D and samples are independent, so one forward-mode pass with
    tangent 1 at every point gives all derivatives at once.
    """
    xs = xs.to(torch.float64).view(-1, 1)
    with torch.no_grad():
        values, slopes = jvp(net, (xs,), (torch.ones_like(xs),))
    return values.squeeze(1), slopes.squeeze(1)


def activation_patterns(net: ReluNet, xs: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` booleans: which of the ``M`` ReLU units is active at each grid point."""
    with torch.no_grad():
        return torch.cat([m.flatten(1) for m in net.trace(xs.to(torch.float64).view(-1, 1)).masks()], dim=1)


def count_kinks(net: ReluNet, xs: torch.Tensor) -> int:
    """Number of neighbouring grid points whose activation patterns differ."""
    patterns = activation_patterns(net, xs)
    return int((patterns[1:] != patterns[:-1]).any(dim=1).sum())


def count_gradient_jumps(gradients: torch.Tensor, rtol: float = 1e-9) -> int:
    """Number of neighbouring grid points where ``f'`` changes (beyond rounding)."""
    scale = gradients.abs().max().clamp_min(1e-300)
    return int(((gradients[1:] - gradients[:-1]).abs() > rtol * scale).sum())


def kinks_by_depth(depths: Iterable[int], width: int, seeds: Iterable[int], xs: torch.Tensor) -> list[dict[str, float]]:
    """Tidy rows ``{depth, seed, kinks, gradient_jumps}`` for random nets of each depth."""
    rows = []
    for depth in depths:
        for seed in seeds:
            net = random_relu_net(depth, width, seed)
            _, gradients = function_and_gradient(net, xs)
            rows.append({"depth": depth, "seed": seed, "kinks": count_kinks(net, xs),
                         "gradient_jumps": count_gradient_jumps(gradients)})
    return rows
