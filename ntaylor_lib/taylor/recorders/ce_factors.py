"""Per-sample Jacobian factors of small scales under cross-entropy, on a subset of rounds.

:class:`CEFactorRecorder` keeps, on every ``stride``-th round and for a few samples of
its minibatch, the factors of each scale's per-sample Jacobian: for a dense layer
``(J^L_l[:, :, alpha], x~)``, for a conv layer the per-neuron Jacobians. Cross-entropy
has no closed-form optimum, so the factors are kept and the convex Taylor-loss problem is
solved with L-BFGS at the end (:func:`ntaylor_lib.taylor.solver.solve_cross_entropy`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...runs.models import ReluNet
from ..jacobians import RULES, layer_matrix, output_by_preactivation
from ..solver import CrossEntropyProblem, dense_operator, jacobian_operator, solve_cross_entropy
from .base import TaylorRecorder


class CEFactorRecorder(TaylorRecorder):
    """Per-sample Jacobian factors of small scales on every ``stride``-th round (cross-entropy).

    Dense layers keep ``(J^L_l[:, :, alpha], x~)`` per sample (``K C + Q`` numbers), conv
    layers the per-neuron Jacobians ``(K, Q)``; with each, the offset ``b = f - J theta^n``
    so that ``b + J V`` is the Taylor approximation. Whole conv layers beyond the first
    are too large for this: :class:`~ntaylor_lib.taylor.recorders.ce_replay.CEReplayRecorder` replays
    them from weight snapshots.

    Args:
        groups: the scales (:class:`Group`).
        stride: record rounds ``n`` with ``n % stride == 0``.
        samples: samples kept per recorded round (the first of the shuffled minibatch; 0: all).
        box_scales: widening of the iterates' box for the comparator (``inf``: none).
        horizons: when to solve: ``every`` epoch end, or ``log:K``
            (:func:`~ntaylor_lib.taylor.recorders.base.horizon_epochs`).
        dtype: storage type of the factors (the solve runs in float64).
    """

    name = "taylor_ce"
    per_group = ("lower", "upper", "rows", "thetas")

    def __init__(self, groups, stride: int = 1, samples: int = 0, box_scales=(1.0,), dtype=torch.float32,
                 solve_at_end=True, tol: float = 1e-10, horizons: str = "every"):
        super().__init__(groups, box_scales, solve_at_end, horizons)
        self.stride, self.samples, self.dtype, self.tol = int(stride), int(samples), dtype, tol
        self.rows: list[list[dict[str, torch.Tensor]]] = [[] for _ in self.groups]
        self.recorded: list[int] = []
        self.recorded_loss: list[float] = []
        self.thetas: list[list[torch.Tensor]] = [[] for _ in self.groups]

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "stride": self.stride, "samples": self.samples, "dtype": str(self.dtype),
                "tol": self.tol}

    @torch.no_grad()
    def on_round(self, n: int, model: ReluNet, x: torch.Tensor, y: torch.Tensor) -> None:
        self._track_box(model)
        self.rounds += 1
        if n % self.stride:
            return
        if self.samples:
            x, y = x[: self.samples], y[: self.samples]
        self.recorded.append(n)
        trace = model.trace(x)
        f = trace.output
        self.recorded_loss.append(float(torch.nn.functional.cross_entropy(f, y)))
        for i, g in enumerate(self.groups):
            layer = model.layer(g.layer)
            theta = layer_matrix(layer)[g.neurons]  # (C, Q)
            jl = output_by_preactivation(model, trace, g.layer, g.neurons)
            if isinstance(layer, nn.Linear):
                xt = torch.nn.functional.pad(trace.inputs[g.layer - 1], (0, 1), value=1.0)
                shift = jl * (xt @ theta.T)[:, None, :]  # (N, K, C): J_alpha theta_alpha
                row = {"g": jl, "x": xt}
            else:
                j = RULES[type(layer)](layer, trace.inputs[g.layer - 1], jl)  # (N, K, C, Q)
                shift = torch.einsum("nkcq,cq->nkc", j, theta)
                row = {"j": j}
            offset = f - shift.sum(2) if g.joint else f[:, :, None] - shift  # (N, K) or (N, K, C)
            row.update(offset=offset, y=y)
            self.thetas[i].append(theta.double().cpu())
            # kept in host memory: on a GPU they would grow with the recorded rounds
            self.rows[i].append({k: (v.to(self.dtype) if v.is_floating_point() else v).cpu() for k, v in row.items()})

    def problem_data(self, i: int, neuron: int | None = None) -> dict[str, torch.Tensor]:
        """Group ``i``'s factors over all recorded rounds in float64 (one neuron's when given)."""
        data = {k: torch.cat([r[k] for r in self.rows[i]]) for k in self.rows[i][0]}
        data = {k: v.double() if v.is_floating_point() else v for k, v in data.items()}
        if neuron is not None:
            pick = {"g": lambda v: v[:, :, neuron : neuron + 1], "j": lambda v: v[:, :, neuron : neuron + 1],
                    "offset": lambda v: v[:, :, neuron]}
            data = {k: pick.get(k, lambda v: v)(v) for k, v in data.items()}
        return data

    @staticmethod
    def problem(data: dict[str, torch.Tensor], rows: int) -> CrossEntropyProblem:
        """The Taylor-loss problem on the first ``rows`` samples (the rounds of a horizon)."""
        d = {k: v[:rows] for k, v in data.items()}
        op = dense_operator(d["g"], d["x"]) if "g" in d else jacobian_operator(d["j"].flatten(2))
        return CrossEntropyProblem(d["offset"], d["y"], op)

    def _solve(self, on: str | None) -> None:
        device, _ = self._solve_target(on)
        per_round = self.rows[0][0]["y"].shape[0] if self.groups and self.rows[0] else 0
        recorded = np.asarray(self.recorded)
        counts = np.array([(recorded < h).sum() for h in self.horizons])  # recorded rounds per horizon
        losses = np.asarray(self.recorded_loss)
        mean_loss = np.array([losses[:c].mean() if c else np.nan for c in counts])
        optimum, used, loss = [], [], []
        scales = sum(1 if g.joint else len(g.neurons) for g in self.groups)
        bar = self._solve_bar(scales * len(self.horizons) * len(self.box_scales))
        for i, g in enumerate(self.groups):
            for j in [None] if g.joint else range(len(g.neurons)):
                data = {k: v.to(device) for k, v in self.problem_data(i, j).items()}  # float64 there
                thetas = torch.stack(self.thetas[i])  # (R, C, Q): theta^n_S per recorded round
                iterates = (thetas if j is None else thetas[:, j]).flatten(1).numpy()
                values = np.full((len(self.box_scales), len(self.horizons)), np.nan)
                for b, scale in enumerate(self.box_scales):
                    box, previous = self.boxes(i, scale, j), None
                    for e, c in enumerate(counts):
                        if c == 0:
                            continue
                        picks = np.unique(np.linspace(0, c - 1, min(6, c)).round().astype(int))
                        starts = [iterates[p] for p in picks] + ([previous] if previous is not None else [])
                        problem = self.problem(data, c * per_round)
                        previous, values[b, e] = solve_cross_entropy(problem, starts, box, self.tol)
                        bar.update()
                optimum.append(values)
                used.append(counts * per_round)
                loss.append(mean_loss)
        bar.close()
        self._store(optimum, used, loss)

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "rows": self.rows, "thetas": self.thetas, "recorded": self.recorded,
                "recorded_loss": self.recorded_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base(state)
        self.rows, self.recorded = state["rows"], list(state["recorded"])
        self.recorded_loss, self.thetas = list(state["recorded_loss"]), state["thetas"]
