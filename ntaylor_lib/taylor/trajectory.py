"""Taylor losses along a real training trajectory, on a 1-D slice of weight space (Figure 2).

:func:`replay` re-runs a stored run's training loop (same seed, same minibatches) and
keeps the weights ``theta^n`` and the minibatch ``B_n`` of a few rounds; the training
loop itself does the work, through a :class:`~ntaylor_lib.runs.recorder.Recorder`, so the
replayed rounds are the stored run's rounds.

:func:`taylor_slice` then draws, for each kept round ``n`` and a unit direction ``d`` in
the coordinates of a scale ``S``, the line ``V(s) = theta^n_S + (s - s_n) d`` with every
other coordinate at ``theta^n`` (``s_n = <theta^n_S - theta^first_S, d>`` places ``W_n`` on
the common axis), and along it

    true loss    L_n(V(s))  = mean_{d in B_n} l(f(x_d; theta_S := V(s)), y_d)
    Taylor loss  T_n^S(V(s)) (:func:`ntaylor_lib.taylor.taylor_loss`)

The two touch at ``s = s_n`` with the same slope (Section 2.3: same value and gradient
at ``W_n``); the Taylor loss is convex in ``s``, the true loss is not in general.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from ..runs.config import RunConfig
from ..runs.data import TaskData
from ..runs.losses import per_sample_loss
from ..runs.models import ReluNet
from ..runs.recorder import Recorder
from ..runs.training import train
from .jacobians import Scale, scale_parameters, scale_vector
from .linearize import taylor_loss


@dataclass
class Snapshot:
    """Round ``n`` of a run: the weights ``theta^n`` (before the step) and the minibatch ``B_n``."""

    n: int
    state: dict[str, torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor


class _Enough(Exception):
    """Raised by the capture once the last wanted round is kept: the replay stops there."""


class _Capture(Recorder):
    name = "capture"

    def __init__(self, rounds: Sequence[int]) -> None:
        self.wanted, self.last = set(int(n) for n in rounds), max(int(n) for n in rounds)
        self.snapshots: list[Snapshot] = []

    def on_round(self, n: int, model: ReluNet, x: torch.Tensor, y: torch.Tensor) -> None:
        if n in self.wanted:
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.snapshots.append(Snapshot(n, state, x.detach().cpu().clone(), y.detach().cpu().clone()))
        if n >= self.last:
            raise _Enough


def replay(config: RunConfig, rounds: Sequence[int], data: TaskData | None = None) -> list[Snapshot]:
    """``theta^n`` and ``B_n`` of the given rounds (counted from 0) of ``config``'s training.

    Runs :func:`ntaylor_lib.runs.training.train` up to the last wanted round and stops; the
    numbers are those of the stored run with this configuration (training is deterministic
    on one device).

    Raises:
        ValueError: a round beyond the run's length.
    """
    if not rounds or min(rounds) < 0:
        raise ValueError(f"rounds must be non-empty and >= 0, got {list(rounds)}")
    capture = _Capture(rounds)
    try:
        train(config, recorders=[capture], data=data, progress=False)
    except _Enough:
        pass
    if len(capture.snapshots) != len(set(rounds)):
        raise ValueError(f"the run has fewer rounds than {max(rounds) + 1}")
    return capture.snapshots


def slice_direction(model: ReluNet, snapshots: Sequence[Snapshot], scale: Scale) -> torch.Tensor:
    """Unit vector along ``theta^last_S - theta^first_S``: the net step direction at the scale."""
    model.load_state_dict(snapshots[0].state)
    first = scale_vector(model, scale).detach().clone()
    model.load_state_dict(snapshots[-1].state)
    step = scale_vector(model, scale).detach() - first
    norm = step.norm()
    if norm == 0:
        raise ValueError("the scale did not move over these rounds: no step direction")
    return step / norm


def _loss_at(model: ReluNet, scale: Scale, v: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             task: str) -> torch.Tensor:
    return per_sample_loss(task, functional_call(model, scale_parameters(model, scale, v), (x,)), y).mean()


def taylor_slice(
    model: ReluNet,
    snapshots: Sequence[Snapshot],
    task: str,
    scale: Scale,
    direction: torch.Tensor | None = None,
    span: tuple[float, float] | None = None,
    margin: float = 0.25,
    points: int = 121,
) -> list[dict[str, Any]]:
    """True and Taylor losses of each round along the slice, as tidy rows.

    Args:
        model: the architecture (its weights are overwritten with each snapshot's).
        snapshots: consecutive rounds from :func:`replay`.
        direction: unit vector ``d`` in the scale's coordinates (default :func:`slice_direction`).
        span: the axis ``(s_min, s_max)``; by default it covers every ``s_n`` and every round's
            Newton step ``s_n - T'/T''`` along ``d`` (the minimiser of a quadratic Taylor loss,
            i.e. exact for MSE), widened by ``margin`` times its width on each side.
        points: grid points on the axis.

    Returns:
        Rows ``{"round", "s", "curve", "loss"}`` with ``curve`` ``"true loss"`` or
        ``"Taylor loss"``, and per round one ``"iterate"`` row at ``s_n`` that also holds
        ``taylor`` (``T_n(theta^n)``), ``slope_true`` and ``slope_taylor`` (``d/ds`` at ``s_n``,
        by autograd), ``curvature_taylor`` (``d^2 T_n/ds^2`` there), ``taylor_minimiser`` (the
        Newton step) and ``off_axis`` (``|theta^n_S - theta^first_S - s_n d|``).
    """
    with warnings.catch_warnings():
        # torch's first forward-mode call loads decompositions through the deprecated torch.jit.script.
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)
        return _taylor_slice(model, snapshots, task, scale, direction, span, margin, points)


def _taylor_slice(model, snapshots, task, scale, direction, span, margin, points) -> list[dict[str, Any]]:
    d = slice_direction(model, snapshots, scale) if direction is None else direction.detach()
    model.load_state_dict(snapshots[0].state)
    origin = scale_vector(model, scale).detach().clone()
    rounds = []
    for snap in snapshots:
        model.load_state_dict(snap.state)
        theta = scale_vector(model, scale).detach().clone()
        s_n = float((theta - origin) @ d)
        taylor = taylor_loss(model, scale, snap.x, snap.y, task)
        t = torch.zeros((), dtype=theta.dtype, requires_grad=True)
        true_value = _loss_at(model, scale, theta + t * d, snap.x, snap.y, task)
        (slope_true,) = torch.autograd.grad(true_value, t)
        t = torch.zeros((), dtype=theta.dtype, requires_grad=True)
        taylor_value = taylor(theta + t * d)
        (slope_taylor,) = torch.autograd.grad(taylor_value, t, create_graph=True)
        (curvature,) = torch.autograd.grad(slope_taylor, t)
        slope_taylor, curvature = float(slope_taylor.detach()), float(curvature)
        newton = s_n - slope_taylor / curvature if curvature > 0 else s_n
        rounds.append((snap, theta, s_n, newton, {
            "round": snap.n, "s": s_n, "curve": "iterate", "loss": float(true_value.detach()),
            "taylor": float(taylor_value.detach()), "slope_true": float(slope_true), "slope_taylor": slope_taylor,
            "curvature_taylor": curvature, "taylor_minimiser": newton,
            "off_axis": float((theta - origin - s_n * d).norm()),
        }))
    if span is None:
        ends = [r[2] for r in rounds] + [r[3] for r in rounds]
        width = (max(ends) - min(ends)) or 1.0
        span = (min(ends) - margin * width, max(ends) + margin * width)
    grid = np.linspace(span[0], span[1], points)
    rows: list[dict[str, Any]] = []
    for snap, theta, s_n, _, iterate in rounds:
        model.load_state_dict(snap.state)
        taylor = taylor_loss(model, scale, snap.x, snap.y, task)
        with torch.no_grad():
            for s in grid:
                v = theta + (float(s) - s_n) * d
                rows.append({"round": snap.n, "s": float(s), "curve": "true loss",
                             "loss": float(_loss_at(model, scale, v, snap.x, snap.y, task))})
                rows.append({"round": snap.n, "s": float(s), "curve": "Taylor loss", "loss": float(taylor(v))})
        rows.append(iterate)
    return rows


__all__ = ["Snapshot", "replay", "slice_direction", "taylor_slice"]
