"""Observations 1 and 2 of section 3.1, as small numerical experiments on a network's weights.

Observation 1 (activation configurations are the smooth regions): along a straight
line ``theta(t) = theta_a + t (theta_b - theta_a)`` in weight space, the loss has a
kink (its slope ``dL/dt`` jumps) only where the activation configuration changes.
:func:`line_walk` measures both on a grid of ``t``. On an interval ``[t_i, t_{i+1}]``
the *slope jump* is

    jump_i = | L'(t_{i+1}) - L'_i(t_{i+1}) |

where ``L'`` is the network's slope and ``L'_i`` the slope of the network whose ReLU
masks and pool switches are clamped at their values at ``t_i``. If no gate changes on
the interval the two networks agree on a neighbourhood of ``t_{i+1}`` and the jump is
exactly zero; otherwise it is generically nonzero. (The clamped network is itself a
polynomial in ``t``, smooth, so this separates kinks from ordinary curvature, which a
finite difference of ``L'`` would not.) Two flips of one gate inside one interval cancel
in the count, so the grid must be fine.

Observation 2 (the Taylor approximation clamps the configuration): for a layer or
neuron scale, :func:`clamping_rows` compares the Taylor approximation at ``V`` with the
clamped network and with the free network, both with ``theta_S := V``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp

from ..runs.config import RunConfig
from ..runs.losses import batch_loss
from ..runs.models import ReluNet, build_model
from ..taylor.jacobians import Scale, scale_parameters, scale_vector
from ..taylor.linearize import clamped_output, taylor_approximation


def initial_model(config: RunConfig) -> ReluNet:
    """``theta^0`` of a run, rebuilt exactly as :func:`ntaylor_lib.runs.training.train` draws it (CPU).

    The global random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(config.task, config.dataset, config.width)


def trained_model(config: RunConfig, state: Mapping[str, torch.Tensor]) -> ReluNet:
    """A run's final weights (``run.model_state()``) loaded into its model, on the CPU."""
    model = build_model(config.task, config.dataset, config.width)
    model.load_state_dict(state)
    return model


class _Call(nn.Module):
    """Calls one method of a :class:`ReluNet`, so ``functional_call`` can swap its weights."""

    def __init__(self, net: ReluNet, method: str) -> None:
        super().__init__()
        self.net, self.method = net, method

    def forward(self, *args: Any) -> Any:
        return getattr(self.net, self.method)(*args)


def _gates(trace) -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU masks ``(D, M)`` bool and the pool switches (flat, possibly empty) of a trace."""
    masks = torch.cat([m.flatten(1) for m in trace.masks()], dim=1)
    pools = [p.flatten(1) for p in trace.pool_indices if p is not None]
    return masks, (torch.cat(pools, dim=1) if pools else masks.new_zeros((masks.shape[0], 0), dtype=torch.long))


def line_walk(
    model: ReluNet,
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    points: int = 1001,
) -> dict[str, np.ndarray]:
    """Walk ``theta(t) = start + t (end - start)`` for ``t`` in ``[0, 1]`` (Observation 1).

    Computed in float64 on copies (``model`` is not changed).

    Args:
        model: the architecture (its own weights are not used).
        start, end: ``{name: tensor}`` weights, e.g. a run's initial and final ``state_dict``.
        x, y: the inputs ``(D, ...)`` and targets whose mean loss is walked.
        task: the loss (``autoencoder``: MSE, ``convnet``: cross-entropy).
        points: grid points ``P`` (``P - 1`` intervals).

    Returns:
        ``t``, ``loss``, ``slope`` (``dL/dt``) ``(P,)``; per interval ``(P - 1,)``:
        ``changes`` (``(input, unit)`` ReLU states that differ between ``t_i`` and
        ``t_{i+1}``, Definition 2), ``pool_changes`` (max-pool switches that differ) and
        ``jump`` (the slope jump defined in the module docstring).
    """
    net = build_model_like(model).double()
    names = [name for name, _ in net.named_parameters()]
    a = {k: start[k].detach().double().cpu() for k in names}
    d = {k: end[k].detach().double().cpu() - a[k] for k in names}
    x, y = x.detach().cpu(), y.detach().cpu()
    x = x.double()
    if task == "autoencoder":
        y = y.double()
    free, traced, clamped = _Call(net, "forward"), _Call(net, "trace"), _Call(net, "clamped")

    tangent = {f"net.{k}": d[k] for k in names}

    def at(t: float) -> dict[str, torch.Tensor]:
        return {f"net.{k}": torch.add(a[k], d[k], alpha=t) for k in names}

    def slope(t: float, trace=None) -> tuple[float, float]:
        """``(L(t), dL/dt)``, of the clamped network when ``trace`` is given: one forward-mode pass."""
        if trace is None:
            f = lambda p: batch_loss(task, functional_call(free, p, (x,)), y)  # noqa: E731
        else:
            f = lambda p: batch_loss(task, functional_call(clamped, p, (x, trace)), y)  # noqa: E731
        value, derivative = jvp(f, (at(t),), (tangent,))
        return float(value), float(derivative)

    grid = np.linspace(0.0, 1.0, points)
    loss, slopes = np.empty(points), np.empty(points)
    changes = np.zeros(points - 1, dtype=np.int64)
    pool_changes = np.zeros(points - 1, dtype=np.int64)
    jump = np.zeros(points - 1)
    previous = None
    for i, t in enumerate(grid):
        loss[i], slopes[i] = slope(float(t))
        with torch.no_grad():
            trace = functional_call(traced, at(float(t)), (x,))
        masks, pools = _gates(trace)
        if previous is not None:
            prev_trace, prev_masks, prev_pools = previous
            changes[i - 1] = int((masks != prev_masks).sum())
            pool_changes[i - 1] = int((pools != prev_pools).sum())
            jump[i - 1] = abs(slopes[i] - slope(float(t), prev_trace)[1])
        previous = (trace, masks, pools)
    return {"t": grid, "loss": loss, "slope": slopes, "changes": changes, "pool_changes": pool_changes, "jump": jump}


def build_model_like(model: ReluNet) -> ReluNet:
    """A fresh :class:`ReluNet` with ``model``'s architecture and a copy of its weights."""
    return copy.deepcopy(model).cpu()


def line_walk_summary(walk: Mapping[str, np.ndarray], tolerance: float = 0.0) -> dict[str, int]:
    """Counts of intervals by (gate change?, slope jump > ``tolerance``?) for a :func:`line_walk`.

    Observation 1 holds on the grid when ``jump_without_change`` is 0 (and, generically,
    ``change_without_jump`` is small: a flipped unit whose downstream gates are all off
    changes nothing).
    """
    changed = (walk["changes"] + walk["pool_changes"]) > 0
    jumped = walk["jump"] > tolerance
    return {
        "intervals": int(changed.size),
        "changed": int(changed.sum()),
        "jumped": int(jumped.sum()),
        "both": int((changed & jumped).sum()),
        "jump_without_change": int((jumped & ~changed).sum()),
        "change_without_jump": int((changed & ~jumped).sum()),
    }


def clamping_rows(
    model: ReluNet,
    scales: Sequence[Scale],
    x: torch.Tensor,
    sizes: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Observation 2, numerically: Taylor approximation vs clamped network vs free network.

    For each scale ``S`` and relative size ``r``, ``V = theta_S + r u`` with ``u`` a
    Gaussian direction scaled to ``||u|| = ||theta_S||``; everything in float64 on a copy.

    Returns:
        One row per (scale, size): ``scale`` (label), ``size``, ``taylor_vs_clamped``
        ``max |T_S(V; x) - clamped(V; x)|``, ``taylor_vs_free`` ``max |T_S(V; x) - f_{theta_S := V}(x)|``,
        ``moved`` ``max |f_{theta_S := V}(x) - f_theta(x)|`` (how far the output moved).
    """
    net = build_model_like(model).double()
    x = x.detach().cpu().double()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        base = net(x)
    for scale in scales:
        theta = scale_vector(net, scale).detach()
        u = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
        u *= theta.norm() / u.norm()
        for r in sizes:
            v = theta + r * u
            taylor = taylor_approximation(net, scale, v, x).detach()
            with torch.no_grad():
                clamp = clamped_output(net, scale, v, x)
                free = functional_call(net, scale_parameters(net, scale, v), (x,))
            rows.append({
                "scale": scale.label,
                "size": float(r),
                "taylor_vs_clamped": float((taylor - clamp).abs().max()),
                "taylor_vs_free": float((taylor - free).abs().max()),
                "moved": float((free - base).abs().max()),
            })
    return rows


__all__ = ["build_model_like", "clamping_rows", "initial_model", "line_walk", "line_walk_summary", "trained_model"]
