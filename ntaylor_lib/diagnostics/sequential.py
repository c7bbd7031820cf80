"""Any piecewise-linear ``nn.Sequential`` as the paper's objects: its weight layers, its gates, its clamped network.

A network built from affine maps (``Linear``, ``Conv2d``, ``AvgPool2d``, ``Flatten``,
``Identity``) and piecewise-linear gates (``ReLU``, ``LeakyReLU``, ``MaxPool2d``, and
``Dropout``'s random mask) is, with every gate fixed at the values one forward pass gave
it, linear in each weight layer's parameters: that *clamped network* is the layer's neural
Taylor approximation at that pass (Observation 2), and the paper's theory applies to it as
it does to the paper's two models. This module walks such a network:

* :func:`modules_of` flattens nested ``Sequential``s and refuses anything else by name;
* :func:`trace` runs a forward pass that keeps each weight layer's input and
  pre-activation and each gate's state;
* :func:`clamped_tail` maps a weight layer's pre-activation to the output with the gates fixed;
* :func:`output_by_preactivation` gives ``J^L_l = d f / d a_l`` per sample (``K`` reverse
  passes of the clamped tail, batched with ``vmap``), from which the per-sample Jacobians
  of a layer's weights follow by the same rules the book's recorders use.

Weight layers are counted from 1 in the order they appear, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp, vjp, vmap

from ..runs.models import ReluNet

#: Module types a diagnosed network may hold (nested ``nn.Sequential``s are flattened).
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
GATES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.Dropout)
LINEAR_MAPS: tuple[type[nn.Module], ...] = (nn.AvgPool2d, nn.Flatten, nn.Identity)
SUPPORTED: tuple[type[nn.Module], ...] = WEIGHT_LAYERS + GATES + LINEAR_MAPS
#: Gates whose state is a unit's activation (the activation configuration is made of these).
ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.LeakyReLU)


class UnsupportedModule(TypeError):
    """A module the diagnostics cannot take apart: its message names it and lists what is supported."""


def _supported_names() -> str:
    return ", ".join(t.__name__ for t in SUPPORTED) + " (inside nn.Sequential, nested or not)"


def modules_of(model: nn.Module) -> list[nn.Module]:
    """The network's modules in order, nested ``Sequential``s flattened.

    Raises:
        UnsupportedModule: for a model that is not an ``nn.Sequential``, for any module whose
            type is not in :data:`SUPPORTED` (subclasses are refused too: they may override
            ``forward``), and for a weight layer the Jacobian rules do not cover (no bias,
            grouped or string-padded convolutions).
    """
    if not isinstance(model, nn.Sequential):
        raise UnsupportedModule(f"the diagnostics take an nn.Sequential, not {type(model).__name__}; supported "
                                f"modules: {_supported_names()}")
    out: list[nn.Module] = []
    for name, module in model.named_children():
        if type(module) is nn.Sequential:
            out += modules_of(module)
            continue
        if type(module) not in SUPPORTED:
            raise UnsupportedModule(f"module {name!r} is a {type(module).__name__}, which the diagnostics do not "
                                    f"support; supported: {_supported_names()}")
        if isinstance(module, WEIGHT_LAYERS) and module.bias is None:
            raise UnsupportedModule(f"module {name!r} ({type(module).__name__}) has no bias; the diagnostics need "
                                    "weight layers with a bias (bias=True)")
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or isinstance(module.padding, str)
                                              or module.padding_mode != "zeros"):
            raise UnsupportedModule(f"module {name!r}: Conv2d is supported with groups=1, numeric padding and "
                                    "padding_mode='zeros'")
        if isinstance(module, nn.MaxPool2d) and module.return_indices:
            raise UnsupportedModule(f"module {name!r}: MaxPool2d with return_indices=True returns a tuple")
        out.append(module)
    if not any(isinstance(m, WEIGHT_LAYERS) for m in out):
        raise UnsupportedModule("the network has no Linear or Conv2d layer: nothing to diagnose")
    return out


def weight_layers(modules: Sequence[nn.Module]) -> list[int]:
    """Positions in ``modules`` of the weight layers: entry ``l - 1`` is weight layer ``l``."""
    return [i for i, m in enumerate(modules) if isinstance(m, WEIGHT_LAYERS)]


@dataclass
class SequentialTrace:
    """One forward pass: per weight layer its input and pre-activation, per gate its state.

    ``gates[i]`` is, for module ``i``: a ReLU's or LeakyReLU's slope (1 where the input is
    positive, 0 or the negative slope elsewhere), a max-pool's switches, a dropout's scaled
    mask (``None`` when the dropout is inactive); ``None`` for other modules. ``pre_gate[i]``
    is an activation gate's input (the unit values whose signs make the configuration).
    """

    inputs: list[torch.Tensor]
    pre: list[torch.Tensor]
    gates: list[torch.Tensor | None]
    pre_gate: list[torch.Tensor | None]
    output: torch.Tensor


def _gate(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(output, state)`` of a gate on ``x``: the state that, held fixed, makes the module linear."""
    if isinstance(module, nn.ReLU):
        slope = (x > 0).to(x.dtype)
        return x * slope, slope
    if isinstance(module, nn.LeakyReLU):
        slope = torch.where(x > 0, torch.ones_like(x), torch.full_like(x, module.negative_slope))
        return x * slope, slope
    if isinstance(module, nn.MaxPool2d):
        out, index = F.max_pool2d(x, module.kernel_size, module.stride, module.padding, module.dilation,
                                  module.ceil_mode, return_indices=True)
        return out, index
    if isinstance(module, nn.Dropout):
        if not module.training or module.p == 0:
            return x, None
        mask = F.dropout(torch.ones_like(x), module.p, True)  # 0 or 1 / (1 - p), as the module draws it
        return x * mask, mask
    raise AssertionError(f"not a gate: {type(module).__name__}")


def _apply_gate(module: nn.Module, x: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
    """The gate with its state held: linear in ``x``."""
    if state is None:  # an inactive dropout
        return x
    if isinstance(module, nn.MaxPool2d):
        return x.flatten(2).gather(2, state.flatten(2)).view_as(state)
    return x * state


def trace(modules: Sequence[nn.Module], x: torch.Tensor) -> SequentialTrace:
    """Forward pass keeping what the Taylor approximations need (differentiable: its output is the model's)."""
    inputs, pre, gates, pre_gate = [], [], [], []
    for module in modules:
        state, before = None, None
        if isinstance(module, WEIGHT_LAYERS):
            inputs.append(x)
            x = module(x)
            pre.append(x)
        elif isinstance(module, GATES):
            before = x
            x, state = _gate(module, x)
        else:
            x = module(x)
        gates.append(state)
        pre_gate.append(before if isinstance(module, ACTIVATIONS) else None)
    return SequentialTrace(inputs, pre, gates, pre_gate, x)


def clamped_forward(modules: Sequence[nn.Module], t: SequentialTrace, x: torch.Tensor, start: int = 0,
                    layers: dict[int, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> torch.Tensor:
    """Modules ``start..`` on ``x`` with every gate held at ``t``'s state (module ``i`` replaced by
    ``layers[i]`` where given): the clamped network, linear in ``x`` and in each weight layer."""
    layers = layers or {}
    for i in range(start, len(modules)):
        module = modules[i]
        if isinstance(module, GATES):
            x = _apply_gate(module, x, t.gates[i])
        else:
            x = layers.get(i, module)(x)
    return x


def clamped_tail(modules: Sequence[nn.Module], t: SequentialTrace, l: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``a_l -> f`` with every gate at ``t``'s state: affine in weight layer ``l``'s pre-activation."""
    position = weight_layers(modules)[l - 1]
    return lambda a: clamped_forward(modules, t, a, position + 1)


def output_by_preactivation(modules: Sequence[nn.Module], t: SequentialTrace, l: int,
                            neurons: Sequence[int] | None = None) -> torch.Tensor:
    """``J^L_l = d f / d a_l`` per sample for the chosen units (conv: channels) of weight layer ``l``.

    The clamped tail is linear, and its samples do not mix, so its Jacobian's rows come from
    one reverse pass per output (``vjp`` on the ``K`` rows of the identity) and its columns
    from one forward pass per unit of ``a_l`` (``jvp`` on the basis): both batched with
    ``vmap``, whichever count is smaller (the autoencoder's 784 outputs against a layer of
    20 units: 20 forward passes).

    Returns:
        ``(N, K, C)`` after a dense layer, ``(N, K, C, H, W)`` after a conv layer.
    """
    a = t.pre[l - 1].detach()
    n, k = a.shape[0], t.output.shape[1]
    chosen = list(range(a.shape[1])) if neurons is None else list(neurons)
    per_channel = a[0, 0].numel()
    tail = clamped_tail(modules, t, l)
    with torch.enable_grad():
        if len(chosen) * per_channel < k:  # forward: one jvp per chosen unit
            units = len(chosen) * per_channel
            basis = torch.zeros(units, *a.shape[1:], dtype=a.dtype, device=a.device)
            flat = torch.arange(units, device=a.device)
            channel = torch.as_tensor(chosen, device=a.device).repeat_interleave(per_channel)
            basis.view(units, a.shape[1], -1)[flat, channel, flat % per_channel] = 1.0
            columns = vmap(lambda d: jvp(tail, (a,), (d.expand_as(a),))[1])(basis)  # (units, N, K)
            return columns.view(len(chosen), *a.shape[2:], n, k).movedim((-2, -1), (0, 1)).detach()
        _, pullback = vjp(tail, a)
        eye = torch.eye(k, dtype=a.dtype, device=a.device)
        rows = vmap(lambda e: pullback(e.expand(n, k))[0])(eye)  # (K, N, C, ...)
    rows = rows.movedim(0, 1).detach()
    return rows if neurons is None else rows[:, :, chosen].contiguous()


def as_sequential(net: ReluNet) -> nn.Sequential:
    """One of the book's networks (:class:`~ntaylor_lib.runs.models.ReluNet`) as a plain ``nn.Sequential``
    sharing its layers: ReLU after every hidden layer, ``MaxPool2d(2)`` where it pools, ``Flatten``
    before the first dense layer after a conv layer. The same function of the same weights."""
    modules: list[nn.Module] = []
    for l, layer in enumerate(net.layers):
        if isinstance(layer, nn.Linear) and l and isinstance(net.layers[l - 1], nn.Conv2d):
            modules.append(nn.Flatten())
        modules.append(layer)
        if l < net.depth - 1:
            modules.append(nn.ReLU())
            if net.pool[l]:
                modules.append(nn.MaxPool2d(2))
    return nn.Sequential(*modules)


__all__ = [
    "as_sequential",
    "ACTIVATIONS",
    "SUPPORTED",
    "SequentialTrace",
    "UnsupportedModule",
    "clamped_forward",
    "clamped_tail",
    "modules_of",
    "output_by_preactivation",
    "trace",
    "weight_layers",
]
