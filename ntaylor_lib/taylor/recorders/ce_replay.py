"""Whole layers under cross-entropy: weight snapshots replayed as Jacobian-vector products (Section 2.4).

A whole conv layer's per-sample Jacobian is ``K x C Q`` numbers per sample (a
``10 x 102,464`` matrix for the paper's second conv layer), too many to keep for every
recorded round. :class:`CEReplayRecorder` keeps instead, on every ``stride``-th round,
the flat parameter vector ``theta^n`` and the training-set indices of the first
``samples`` examples of the minibatch (the examples themselves when the training loop
gives no indices). When solving, each recorded round is replayed: the network is
loaded at ``theta^n``, its ReLU masks and max-pool switches on those examples are fixed
(the clamped network of Observation 2), and the Taylor approximation

    T^n_l(V; x) = f(x) + J^n_l(x) (V - theta^n_l) = clamped_n(x; layer l := V)

is evaluated as the clamped network with layer ``l`` set to ``V``, which is affine in
``V``: ``J V`` is a forward pass through the layer and the clamped tail, and ``J^T r`` its
``vjp``, built once per round and reused by every L-BFGS step (:mod:`ntaylor_lib.taylor.solver`).
Nothing of size ``K x P`` per sample is ever formed. Memory: one parameter vector per
recorded round while training; at the solve, each replayed round's activations.

Subsampling (``stride``, ``samples``) makes ``TO`` an estimate from the recorded rounds:
the minimum of a subsample's mean is biased low, so the regret is biased high.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp

from ...runs.models import ReluNet
from ..jacobians import clamped_tail, layer_matrix
from ..solver import CrossEntropyProblem, LinearOperator, solve_cross_entropy
from .base import Group, TaylorRecorder


def layer_map(layer: nn.Module, inputs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Layer ``l``'s pre-activation with its parameters set to ``v`` (``(C, Q)`` as :func:`layer_matrix`)."""
    v = v.view(layer.weight.shape[0], -1)
    return functional_call(layer, {"weight": v[:, :-1].reshape(layer.weight.shape), "bias": v[:, -1]}, (inputs,))


def replayed_round(model: ReluNet, flat: torch.Tensor, l: int, x: torch.Tensor):
    """One recorded round's Taylor approximation of layer ``l``, as ``(offset, apply, adjoint, theta_l)``.

    ``model`` gives the architecture and dtype; a copy of it is loaded with ``flat`` (the
    parameters at ``theta^n``) and kept by the returned closures, which read its layers.
    ``offset`` ``(S, K)`` is ``T(0)``, ``apply(V) = J V``, ``adjoint(r) = J^T r``.
    """
    frozen = copy.deepcopy(model).requires_grad_(False)
    torch.nn.utils.vector_to_parameters(flat.to(next(frozen.parameters()).dtype), frozen.parameters())
    with torch.no_grad():
        trace = frozen.trace(x)
    layer, inputs, tail = frozen.layer(l), trace.inputs[l - 1], clamped_tail(frozen, l, trace)
    theta = layer_matrix(layer).flatten().clone()

    def taylor(v: torch.Tensor) -> torch.Tensor:
        return tail(layer_map(layer, inputs, v))

    with torch.no_grad():
        offset = taylor(torch.zeros_like(theta))
    _, pullback = vjp(taylor, theta)  # affine map: its pullback is the same at every point

    def apply(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return taylor(v) - offset

    def adjoint(r: torch.Tensor) -> torch.Tensor:
        return pullback(r)[0]

    return offset, apply, adjoint, theta


def replay_operator(rounds: Sequence[tuple[Any, Any, Any, Any]]) -> tuple[torch.Tensor, LinearOperator]:
    """Stack replayed rounds into ``(offset (M, K), A)`` over all their samples."""
    offsets = [r[0] for r in rounds]
    sizes = [o.shape[0] for o in offsets]

    def apply(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([r[1](v) for r in rounds])

    def adjoint(res: torch.Tensor) -> torch.Tensor:
        return sum(r[2](part) for r, part in zip(rounds, torch.split(res, sizes)))

    return torch.cat(offsets), LinearOperator(apply, adjoint)


class CEReplayRecorder(TaylorRecorder):
    """Whole layers (conv or dense) under cross-entropy, from replayed weight snapshots.

    Args:
        groups: whole layers (``Group(l, all neurons, joint=True)``).
        stride: record rounds ``n`` with ``n % stride == 0``.
        samples: examples kept per recorded round (the first of the shuffled minibatch; 0: all).
        box_scales: widening of the iterates' box for the comparator (``inf``: none).
        horizons: when to solve: ``every`` epoch end, or ``log:K``
            (:func:`~ntaylor_lib.taylor.recorders.base.horizon_epochs`).
        tol: L-BFGS stopping tolerance (relative decrease per step).
        max_iter: L-BFGS iterations per horizon (warm-started from the previous one).
    """

    name = "taylor_replay"

    def __init__(self, groups: Sequence[Group], stride: int = 1, samples: int = 0, box_scales=(1.0,),
                 solve_at_end: bool = True, tol: float = 1e-10, max_iter: int = 200, horizons: str = "every"):
        if not all(g.joint for g in groups):
            raise ValueError("CEReplayRecorder records whole layers: use CEFactorRecorder for neurons")
        super().__init__(groups, box_scales, solve_at_end, horizons)
        self.stride, self.samples, self.tol, self.max_iter = int(stride), int(samples), tol, int(max_iter)
        self.snapshots: list[torch.Tensor] = []  # flat theta^n per recorded round (float32, cpu)
        self.batches: list[torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = []  # indices, or (x, y)
        self.recorded: list[int] = []
        self.recorded_loss: list[float] = []
        self._index: torch.Tensor | None = None

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "stride": self.stride, "samples": self.samples, "tol": self.tol,
                "max_iter": self.max_iter}

    def setup(self, model: ReluNet, data: Any, config: Any) -> None:
        super().setup(model, data, config)
        self.data = data
        self.template = copy.deepcopy(model).to("cpu").double()  # the architecture each replayed round copies

    def on_batch(self, n: int, index: torch.Tensor) -> None:
        self._index = index

    @torch.no_grad()
    def on_round(self, n: int, model: ReluNet, x: torch.Tensor, y: torch.Tensor) -> None:
        self._track_box(model)
        self.rounds += 1
        index, self._index = self._index, None
        if n % self.stride:
            return
        keep = self.samples or x.shape[0]
        x, y = x[:keep], y[:keep]
        self.recorded.append(n)
        self.recorded_loss.append(float(F.cross_entropy(model(x), y)))
        self.snapshots.append(torch.nn.utils.parameters_to_vector(model.parameters()).float().cpu())
        self.batches.append(index[:keep].cpu() if index is not None else (x.cpu(), y.cpu()))

    def _examples(self, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batches[r]
        if isinstance(batch, tuple):
            return batch
        index = batch.to(self.data.train_x.device)
        return self.data.train_x[index].cpu(), self.data.train_y[index].cpu()

    def _solve(self, on: str | None) -> None:
        device, _ = self._solve_target(on)
        template = copy.deepcopy(self.template).to(device)  # replayed rounds copy it: their passes run there
        recorded = np.asarray(self.recorded)
        counts = np.array([(recorded < h).sum() for h in self.horizons])  # recorded rounds per horizon
        losses = np.asarray(self.recorded_loss)
        mean_loss = np.array([losses[:c].mean() if c else np.nan for c in counts])
        examples = [self._examples(r) for r in range(len(self.recorded))]
        bar = self._solve_bar(len(self.groups) * len(self.horizons) * len(self.box_scales))
        optimum, used, loss = [], [], []
        for i, g in enumerate(self.groups):
            rounds = [replayed_round(template, flat.to(device), g.layer, x.to(device, torch.float64))
                      for flat, (x, _) in zip(self.snapshots, examples)]
            targets = [y.to(device) for _, y in examples]
            iterates = [r[3].cpu().numpy() for r in rounds]
            sizes = np.cumsum([0] + [t.shape[0] for t in targets])
            values = np.full((len(self.box_scales), len(self.horizons)), np.nan)
            for b, scale in enumerate(self.box_scales):
                box, previous = self.boxes(i, scale), None
                for e, c in enumerate(counts):
                    if c == 0:
                        continue
                    offset, op = replay_operator(rounds[:c])
                    problem = CrossEntropyProblem(offset, torch.cat(targets[:c]), op)
                    picks = np.unique(np.linspace(0, c - 1, min(6, c)).round().astype(int))
                    starts = [iterates[p] for p in picks] + ([previous] if previous is not None else [])
                    previous, values[b, e] = solve_cross_entropy(problem, starts, box, self.tol, self.max_iter)
                    bar.update()
            optimum.append(values)
            used.append(sizes[counts])
            loss.append(mean_loss)
        bar.close()
        self._store(optimum, used, loss)

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "snapshots": self.snapshots, "batches": self.batches,
                "recorded": self.recorded, "recorded_loss": self.recorded_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base(state)
        self.snapshots, self.batches = list(state["snapshots"]), list(state["batches"])
        self.recorded, self.recorded_loss = list(state["recorded"]), list(state["recorded_loss"])


__all__ = ["CEReplayRecorder", "layer_map", "replay_operator", "replayed_round"]
