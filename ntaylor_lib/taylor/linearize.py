"""Neural Taylor approximations and Taylor losses at a round, at any scale (Section 2.3).

At round ``n`` with weights ``theta^n`` and scale ``S``:

    T^n_S(V; x) = f_{theta^n}(x) + J^n_S(x) (V - theta^n_S)          (the Taylor approximation)
    T_n^S(V)    = mean_{d in B_n} l(T^n_S(V; x_d), y_d)                (the Taylor loss, convex in V)

:func:`linearize` returns ``V -> T^n_S(V; x)`` as one ``jvp`` at ``theta^n`` (the same
reading as ``neural_tangents.linearize``); :func:`taylor_loss` composes it with the
task's loss. For layer and neuron scales the Taylor approximation is the network with
``theta_S := V`` and every gate clamped at ``theta^n`` (Observation 2):
:func:`clamped_output` computes that side, and the tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call, jvp

from ..runs.losses import per_sample_loss
from ..runs.models import ReluNet
from .jacobians import Scale, scale_parameters, scale_vector


def linearize(model: ReluNet, scale: Scale) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``T^n_S``: the first-order Taylor expansion of the network in ``theta_S`` at the model's weights.

    Args:
        model: holds ``theta^n`` (read when this is called; later changes are not seen).
        scale: the coordinates ``S``.

    Returns:
        ``taylor(V, x) -> (N, K)``, ``f(x) + J_S(x) (V - theta_S)``, differentiable in ``V``.

    Example:
        >>> T = linearize(net, Scale(layer=2))
        >>> T(scale_vector(net, Scale(2)), x)  # == net(x)
    """
    theta = scale_vector(model, scale).detach().clone()
    base = {name: p.detach().clone() for name, p in model.named_parameters()}

    def taylor(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        def f(w: torch.Tensor) -> torch.Tensor:
            return functional_call(model, scale_parameters(model, scale, w, base), (x,))

        out, tangent = jvp(f, (theta,), (v - theta,))
        return out.detach() + tangent

    return taylor


def taylor_approximation(model: ReluNet, scale: Scale, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``T^n_S(V; x)``: ``(N, K)`` (one-shot form of :func:`linearize`)."""
    return linearize(model, scale)(v, x)


def taylor_loss(
    model: ReluNet, scale: Scale, x: torch.Tensor, y: torch.Tensor, task: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``T_n^S``: ``V -> mean_d l(T^n_S(V; x_d), y_d)``, a scalar, convex in ``V`` (Section 2.3).

    Equals the incurred loss ``L_n`` at ``V = theta^n_S`` and has the backprop gradient there.
    """
    taylor = linearize(model, scale)
    return lambda v: per_sample_loss(task, taylor(v, x), y).mean()


def clamped_output(model: ReluNet, scale: Scale, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The network with ``theta_S := V`` and ReLU masks and pool switches clamped at ``theta^n`` (Observation 2).

    For a layer or neuron scale this equals :func:`taylor_approximation` for every ``V``.
    """
    with torch.no_grad():
        trace = model.trace(x)
    params = scale_parameters(model, scale, v)
    saved = {name: p.data for name, p in model.named_parameters()}
    try:
        for name, p in model.named_parameters():
            p.data = params[name].detach()
        return model.clamped(x, trace)
    finally:
        for name, p in model.named_parameters():
            p.data = saved[name]


__all__ = ["clamped_output", "linearize", "taylor_approximation", "taylor_loss"]
