"""Small random dense and conv ReLU nets (with max-pooling) shared by the Taylor tests."""

import torch
from torch import nn

from ntaylor_lib.jacobians import Scale
from ntaylor_lib.models import ReluNet


def small_nets(seed: int = 0):
    """``[(name, net, x), ...]`` in float64: a dense net and a conv net with max-pooling."""
    torch.manual_seed(seed)
    dense = ReluNet([nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 7)]).double()
    conv = ReluNet(
        [nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 2 * 2, 5), nn.Linear(5, 3)],
        pool=[True, True, False, False],
    ).double()
    return [("dense", dense, torch.randn(5, 6, dtype=torch.float64)),
            ("conv", conv, torch.randn(4, 2, 8, 8, dtype=torch.float64))]


def all_scales(net: ReluNet):
    """Network, every layer, and neuron 1 of every layer."""
    return [Scale()] + [Scale(l) for l in range(1, net.depth + 1)] + [Scale(l, 1) for l in range(1, net.depth + 1)]
