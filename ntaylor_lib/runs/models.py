"""The paper's two rectifier networks, as one addressable piecewise-linear stack.

A :class:`ReluNet` is a list of weight layers (``nn.Linear`` or ``nn.Conv2d``), each
optionally followed by a ReLU and a 2x2 max-pool. Layers are numbered from 1, the
input layer, as in the paper's figures (``net.layer(1)``). Every ReLU unit (for a
conv layer: one channel at one position) and every pooling switch can be read off
:meth:`ReluNet.trace`, and :meth:`ReluNet.clamped` runs the network with masks and
switches held fixed (Observation 2). No ReLU is in place, so nothing is overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

AUTOENCODER_SIZES = (784, 50, 30, 20, 30, 50, 784)


@dataclass
class Trace:
    """What one forward pass saw, per weight layer ``l = 1..L`` (index ``l - 1``).

    Attributes:
        inputs: the input of each layer (conv layers: the image, dense: the flat vector).
        pre: pre-activations ``a_l``; the output ``f = a_L`` is ``pre[-1]``.
        pool_indices: max-pool switches (flat indices from ``max_pool2d``), ``None`` where no pool.
    """

    inputs: list[torch.Tensor]
    pre: list[torch.Tensor]
    pool_indices: list[torch.Tensor | None]

    @property
    def output(self) -> torch.Tensor:
        return self.pre[-1]

    def masks(self) -> list[torch.Tensor]:
        """ReLU masks ``a_l > 0`` of every hidden layer (the output layer is linear)."""
        return [a > 0 for a in self.pre[:-1]]


def max_pool_2x2(x: torch.Tensor, return_indices: bool = False):
    """``F.max_pool2d(x, 2)`` (and its switches), computed on a channels-last copy.

    The same values and indices as on the default layout, exactly (a max picks, it does
    not round), but PyTorch's CPU kernel for channels-last is several times faster: on the
    convnet's first pool (batch 128, 16 x 28 x 28) 1.5 ms with both copies against 4.3 ms.
    """
    try:
        out = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2, return_indices=return_indices)
    except RuntimeError:  # inside torch.func.vmap, where only the default layout exists
        return F.max_pool2d(x, 2, return_indices=return_indices)
    if return_indices:
        return out[0].contiguous(), out[1].contiguous()
    return out.contiguous()


class ReluNet(nn.Module):
    """A stack of dense or conv layers with ReLU and optional 2x2 max-pooling.

    Args:
        layers: the weight layers, input layer first.
        pool: per layer, whether a 2x2 max-pool follows its ReLU.

    The last layer is linear (no ReLU); a conv layer followed by a dense one is
    flattened in between.
    """

    def __init__(self, layers: list[nn.Module], pool: list[bool] | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.pool = list(pool or [False] * len(layers))
        if len(self.pool) != len(self.layers):
            raise ValueError("pool needs one flag per layer")

    @property
    def depth(self) -> int:
        return len(self.layers)

    def layer(self, index: int) -> nn.Module:
        """Weight layer ``index`` counted from 1 (the input layer), as in the paper."""
        if not 1 <= index <= self.depth:
            raise IndexError(f"layer {index} does not exist; this network has layers 1..{self.depth}")
        return self.layers[index - 1]

    def _input_of(self, l: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.layers[l]
        if isinstance(layer, nn.Linear) and x.dim() > 2:
            x = x.flatten(1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self.depth - 1
        for l, layer in enumerate(self.layers):
            x = layer(self._input_of(l, x))
            if l < last:
                x = F.relu(x)
                if self.pool[l]:
                    x = max_pool_2x2(x)
        return x

    def trace(self, x: torch.Tensor) -> Trace:
        """Forward pass that keeps every layer's input, pre-activation and pooling switch."""
        inputs, pre, switches = [], [], []
        last = self.depth - 1
        for l, layer in enumerate(self.layers):
            x = self._input_of(l, x)
            inputs.append(x)
            a = layer(x)
            pre.append(a)
            index = None
            if l < last:
                x = F.relu(a)
                if self.pool[l]:
                    x, index = max_pool_2x2(x, return_indices=True)
            switches.append(index)
        return Trace(inputs=inputs, pre=pre, pool_indices=switches)

    def clamped(self, x: torch.Tensor, trace: Trace) -> torch.Tensor:
        """The network with every ReLU mask and max-pool switch fixed at ``trace``'s values.

        With the gates fixed the network is linear in each layer's weights, so changing
        one layer's (or one neuron's) weights here gives exactly the neural Taylor
        approximation at the point where ``trace`` was taken (Observation 2).
        """
        last = self.depth - 1
        for l, layer in enumerate(self.layers):
            a = layer(self._input_of(l, x))
            if l == last:
                return a
            x = a * (trace.pre[l] > 0).to(a.dtype)
            index = trace.pool_indices[l]
            if index is not None:
                flat = x.flatten(2)
                x = flat.gather(2, index.flatten(2)).view_as(index)
        raise AssertionError("unreachable")


def autoencoder(sizes: tuple[int, ...] = AUTOENCODER_SIZES) -> ReluNet:
    """The paper's MNIST autoencoder: dense 784-50-30-20-30-50-784, ReLU, linear output."""
    return ReluNet([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])


def convnet(in_channels: int = 3, image_size: int = 32, width: int = 64, hidden: int = 192,
            classes: int = 10) -> ReluNet:
    """The paper's convnet: 3 x [conv ``width`` 5x5 same padding, ReLU, 2x2 max-pool], dense ``hidden`` ReLU, dense 10.

    Works for CIFAR-10 (3x32x32: 4x4 maps after pooling) and MNIST (1x28x28: 3x3 maps).
    """
    side = image_size
    for _ in range(3):
        side //= 2
    if side < 1:
        raise ValueError(f"image_size {image_size} is too small for three 2x2 poolings")
    convs = [nn.Conv2d(in_channels if i == 0 else width, width, 5, padding=2) for i in range(3)]
    dense = [nn.Linear(width * side * side, hidden), nn.Linear(hidden, classes)]
    return ReluNet(convs + dense, pool=[True, True, True, False, False])


def build_model(task: str, dataset: str = "mnist", width: int = 64) -> ReluNet:
    """The model of ``task`` for inputs of ``dataset`` (convnet only: MNIST 1x28x28 or CIFAR-10 3x32x32)."""
    if task == "autoencoder":
        return autoencoder()
    if task == "convnet":
        channels, size = (1, 28) if dataset == "mnist" else (3, 32)
        return convnet(in_channels=channels, image_size=size, width=width)
    raise ValueError(f"unknown task {task!r}; valid: autoencoder, convnet")


def relu_unit_count(model: ReluNet, example: torch.Tensor) -> int:
    """Number of ReLU units ``M`` of the activation configuration for inputs shaped like ``example``."""
    with torch.no_grad():
        trace = model.trace(example[:1])
    return sum(a[0].numel() for a in trace.pre[:-1])
