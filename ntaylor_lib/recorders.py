"""Recorders that collect what the hindsight Taylor optimum needs while a run trains (Section 2.4).

Both attach to :func:`ntaylor_lib.training.train` through the :class:`Recorder` hooks,
track the iterates' box ``[min_n theta^n_S, max_n theta^n_S]`` of every scale over every
round, mark the horizons (the round count at the end of every epoch), and, at the end of
the last epoch, solve ``TO_S(N)`` at every horizon and every ``box_scale``
(:mod:`ntaylor_lib.solver`). The stored arrays (``<name>/optimum`` etc.) turn into the
tidy regret table with :func:`ntaylor_lib.regret.regret_curves`.

* :class:`MSEStatsRecorder` (autoencoder, dense nets): exact streaming sufficient
  statistics ``H = sum J^T J``, ``g = sum J^T c``, ``s = sum ||c||^2`` with
  ``c = J theta^n_S - (f - y)``, never forming ``J``: per sample ``J^T J = (x~ x~^T) kron
  (J_L^T J_L)``, and the Grams ``J_L^T J_L`` of every layer come from one backward
  recursion ``Gram_l = D_l W_{l+1}^T Gram_{l+1} W_{l+1} D_l`` (``Gram_{L-1} = D W_L^T W_L D``).
  Memory per epoch is independent of the rounds. Neurons with a wide input (the input
  layer's, ``Q = 785``) keep per-sample factors (``x~``, ``||J_L[:, alpha]||^2``, ...) on
  every ``input_stride``-th round instead, reduced to statistics when solving.
* :class:`CEFactorRecorder` (classifier): on every ``stride``-th round, per-sample factors
  of small scales: dense layers ``(J^L_l, x~)``, conv layers the per-neuron Jacobians.

Where rounds are subsampled, ``TO`` is estimated from the recorded rounds only: the
minimum of a subsample's mean is biased low, so the regret is biased high; the arrays
say which rounds were used so the book can state it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .jacobians import RULES, layer_matrix, output_by_preactivation
from .models import ReluNet
from .solver import (
    CrossEntropyProblem, QuadraticProblem, dense_operator, iterate_box, jacobian_operator,
    solve_cross_entropy, solve_quadratic_boxes,
)
from .training import Recorder


@dataclass
class Group:
    """Neurons of one layer, solved jointly (a layer scale) or as separate neuron scales."""

    layer: int
    neurons: list[int]
    joint: bool

    def labels(self) -> list[str]:
        if self.joint:
            return [f"layer{self.layer}"]
        return [f"layer{self.layer}/neuron{a}" for a in self.neurons]


def spread(count: int, available: int) -> list[int]:
    """``count`` neuron indices spread evenly over ``0..available-1`` (all when ``count >= available``)."""
    if count >= available:
        return list(range(available))
    return sorted({int(round(i)) for i in np.linspace(0, available - 1, count)})


class TaylorRecorder(Recorder):
    """Shared bookkeeping: groups, iterate boxes, horizons, solve at the end, stored arrays."""

    name = "taylor"
    #: attributes holding one entry per group, in group order (:meth:`for_group` cuts them)
    per_group: tuple[str, ...] = ("lower", "upper")

    def __init__(self, groups: Sequence[Group], box_scales: Sequence[float] = (1.0,), solve_at_end: bool = True):
        self.groups = list(groups)
        self.box_scales = [float(b) for b in box_scales]
        self.solve_at_end = solve_at_end
        self.lower: list[torch.Tensor | None] = [None] * len(self.groups)
        self.upper: list[torch.Tensor | None] = [None] * len(self.groups)
        self.horizons: list[int] = []
        self.rounds = 0
        self.result: dict[str, np.ndarray] = {}

    def for_group(self, i: int, neurons: int = 0) -> TaylorRecorder:
        """A shallow copy holding only group ``i`` (of a neuron group only its first ``neurons``;
        0: all), whose :meth:`solve` solves that group alone: to time groups one by one, or to
        spread them over workers. The recorded data are shared, not copied."""
        sub = copy.copy(self)
        group = self.groups[i]
        if neurons and not group.joint:
            group = dataclasses.replace(group, neurons=group.neurons[:neurons])
        sub.groups = [group]
        for name in self.per_group:
            setattr(sub, name, [getattr(self, name)[i]])
        sub.result = {}
        return sub

    def spec(self) -> dict[str, Any]:
        return {
            "groups": [[g.layer, g.neurons, g.joint] for g in self.groups],
            "box_scales": [str(b) for b in self.box_scales],
        }

    def setup(self, model: ReluNet, data: Any, config: Any) -> None:
        self.epochs = config.epochs

    def _widen_box(self, i: int, lower: torch.Tensor, upper: torch.Tensor) -> None:
        """Grow group ``i``'s iterate box to include ``[lower, upper]`` (``(C, Q)`` float64)."""
        self.lower[i] = lower.clone() if self.lower[i] is None else torch.minimum(self.lower[i], lower)
        self.upper[i] = upper.clone() if self.upper[i] is None else torch.maximum(self.upper[i], upper)

    def _track_box(self, model: ReluNet) -> None:
        with torch.no_grad():
            for i, g in enumerate(self.groups):
                theta = layer_matrix(model.layer(g.layer))[g.neurons].double()
                self._widen_box(i, theta, theta)

    def on_epoch_end(self, epoch: int, model: ReluNet) -> None:
        if epoch == 0:
            return
        self.horizons.append(self.rounds)
        self._epoch_done()

    def on_train_end(self, model: ReluNet, status: str) -> None:
        # Also after a divergence: the horizons reached before it still get their optimum.
        if self.solve_at_end and self.horizons:
            self.solve()

    def _epoch_done(self) -> None:
        """Snapshot whatever the horizon needs."""

    def boxes(self, i: int, box_scale: float, neuron: int | None = None):
        lo, hi = self.lower[i].cpu().numpy(), self.upper[i].cpu().numpy()
        if neuron is not None:
            lo, hi = lo[neuron], hi[neuron]
        return iterate_box(lo.ravel(), hi.ravel(), box_scale)

    def _base_state(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper, "horizons": self.horizons, "rounds": self.rounds}

    def _load_base(self, state: dict[str, Any]) -> None:
        self.lower, self.upper = state["lower"], state["upper"]
        self.horizons, self.rounds = list(state["horizons"]), state["rounds"]

    def _store(self, optimum: list[np.ndarray], used: list[np.ndarray], loss: list[np.ndarray]) -> None:
        """Keep the solved arrays: one row per scale (a layer, or one neuron)."""
        labels, layers, neurons = [], [], []
        for g in self.groups:
            labels += g.labels()
            layers += [g.layer] * len(g.labels())
            neurons += [-1] if g.joint else g.neurons
        self.result = {
            "labels": np.asarray(labels),
            "layer": np.asarray(layers, dtype=np.int64),
            "neuron": np.asarray(neurons, dtype=np.int64),
            "box_scales": np.asarray(self.box_scales, dtype=np.float64),
            "horizons": np.asarray(self.horizons, dtype=np.int64),
            "optimum": np.stack(optimum),  # (S, B, E)
            "samples_used": np.stack(used),  # (S, E): samples (all rounds used) up to each horizon
            "recorded_loss": np.stack(loss),  # (S, E): mean incurred loss over the rounds used
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.result)

    def solve(self) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- MSE

class MSEStatsRecorder(TaylorRecorder):
    """Exact streaming MSE statistics for layer and neuron scales of a dense :class:`ReluNet`.

    Rounds are buffered (``theta^n`` as one flat copy, the minibatch by reference) and
    processed ``chunk_rounds`` at a time, with the round as a batch dimension: one
    backward Gram recursion and one product per statistic per chunk instead of per round,
    so the per-round cost is a copy of the weights. Under :func:`ntaylor_lib.training.train`
    the recorder also copies what it reads of the training pass (the pre-activations, the
    loss gradients and the loss, :meth:`on_backward`) into chunk buffers, so it repeats
    neither the forward pass nor the error recursion; rounds driven through :meth:`on_round`
    alone get one batched forward pass per chunk.
    The layer statistic ``sum (x~ x~^T) kron Gram`` is accumulated on the upper
    triangles of both symmetric factors (a quarter of the products) and unfolded when
    solving.

    Args:
        groups: the scales (:class:`Group`); a whole output layer is not supported.
        box_scales: widening of the iterates' box for the comparator (``inf``: none).
        input_stride: rounds between recordings for groups with inputs wider than
            ``factor_width`` (the input layer's neurons); every round otherwise.
        factor_width: ``Q`` above which a group keeps per-sample factors, not statistics.
        chunk_rounds: rounds buffered before their statistics are computed (memory
            ``chunk_rounds`` times the weights and a minibatch; no effect on the result
            beyond float rounding).
    """

    name = "taylor_mse"
    per_group = ("lower", "upper", "running", "snapshots", "factor")
    uses_trace = True  # the training pass's pre-activations and gradients: no forward pass of its own

    def __init__(self, groups, box_scales=(1.0,), input_stride: int = 1, factor_width: int = 128, solve_at_end=True,
                 chunk_rounds: int = 64):
        super().__init__(groups, box_scales, solve_at_end)
        self.input_stride, self.factor_width = int(input_stride), int(factor_width)
        self.chunk_rounds = max(1, int(chunk_rounds))
        self.running: list[dict[str, Any]] = [{} for _ in self.groups]
        self.snapshots: list[list[dict[str, Any]]] = [[] for _ in self.groups]
        self._pending: list[_Round] = []
        self._thetas: torch.Tensor | None = None  # (chunk_rounds, P): the buffered rounds' parameters
        self._traces: _TraceBuffers | None = None  # what the flush reads of the buffered rounds' training passes
        self._views: tuple[ReluNet, list[torch.Tensor]] | None = None

    def spec(self) -> dict[str, Any]:
        # "layout": the layer and neuron statistics are stored on symmetric triangles, factor rows with
        # per-round sums of ||f - y||^2 (checkpoints of other layouts differ).
        return {**super().spec(), "input_stride": self.input_stride, "factor_width": self.factor_width,
                "layout": "triangles-v3"}

    def _factor_mode(self, model: ReluNet, g: Group) -> bool:
        return not g.joint and model.layer(g.layer).in_features + 1 > self.factor_width

    def setup(self, model, data, config) -> None:
        super().setup(model, data, config)
        if not all(isinstance(m, nn.Linear) for m in model.layers):
            raise TypeError("MSEStatsRecorder handles dense networks only")
        if any(g.joint and g.layer == model.depth for g in self.groups):
            raise ValueError("the whole output layer's H is K^2 Q^2: record its neurons instead")
        self.factor = [self._factor_mode(model, g) for g in self.groups]
        self.output_width = model.layer(model.depth).out_features
        self._shapes = [(m.out_features, m.in_features) for m in model.layers]
        depth, layers = model.depth, {g.layer for g in self.groups}
        # What the flush reads of a training pass: the pre-activations of the masks from the lowest
        # group up, of each group and of its input (the output apart: its width K is large and
        # only the output neurons' columns and ||f - y||^2 are needed), and the errors r_l of the
        # groups' layers. Copied into chunk buffers as each round's trace arrives.
        used = set(range(min(layers) - 1, depth - 1)) | {l - 1 for l in layers} | {l - 2 for l in layers if l > 1}
        self._pre_layers = sorted(used - {depth - 1})
        self._error_layers = sorted(layers - {depth})
        self._output_columns = sorted({a for g in self.groups if g.layer == depth for a in g.neurons})
        self._traces = None

    @torch.no_grad()
    def on_round(self, n: int, model: ReluNet, x: torch.Tensor, y: torch.Tensor) -> None:
        self.rounds += 1
        # A full chunk is flushed here, not when its last round arrives: that round's trace
        # comes afterwards, through on_backward.
        if self._pending and (len(self._pending) >= self.chunk_rounds or self._pending[0].x.shape != x.shape):
            self._flush()  # (a chunk also holds minibatches of one size only)
        if self._views is None or self._views[0] is not model:  # flat views of the parameters, which
            # the optimizer updates in place: built once, so a round costs one concatenation
            self._views = (model, [t.detach().view(-1) for m in model.layers for t in (m.weight, m.bias)])
        tensors = self._views[1]
        like, size = tensors[0], sum(t.numel() for t in tensors)
        if self._thetas is None or (self._thetas.shape[1], self._thetas.dtype, self._thetas.device) != (
                size, like.dtype, like.device):
            self._thetas = like.new_empty(self.chunk_rounds, size)
        # theta^n into the chunk's slot: a reused buffer, so the flush needs no stacking copy
        flat = torch.cat(tensors, out=self._thetas[len(self._pending)])
        # x and y are fresh tensors each round (indexed from the data set), so a reference is enough.
        self._pending.append(_Round(n, x, y, flat))

    @torch.no_grad()
    def on_backward(self, n: int, trace, grads, y, loss) -> None:
        """Copy what the flush needs of round ``n``'s training pass into the chunk's buffers: the
        flush then runs no forward pass of its own, and the errors ``r_l = J_L^T e`` are the
        gradients scaled back (``dL/da_l = 2 r_l / (N K)`` for the mean squared error), and
        ``sum_d ||f_d - y_d||^2`` is ``N K L_n``. Copied, not referenced: the training pass's own
        tensors are freed and their memory reused (each costs about a cache miss per byte). The
        scaling waits for the flush: one operation per chunk instead of one per round."""
        last = self._pending[-1] if self._pending else None
        if last is None or last.n != n:
            return
        output = trace.pre[-1]
        slot = len(self._pending) - 1
        if self._traces is None or not self._traces.fits(output, self.chunk_rounds):
            self._traces = _TraceBuffers.like(trace.pre, self._pre_layers, self._error_layers,
                                              self._output_columns, self.chunk_rounds)
        buffers = self._traces
        # one call for all the copies: each small copy of its own costs more in dispatch than in bytes
        torch._foreach_copy_(buffers.slots[slot], [trace.pre[l] for l in self._pre_layers]
                             + [grads[l - 1] for l in self._error_layers] + [loss])
        if self._output_columns:  # their errors f - y, not the rounded gradients 2 (f - y) / (N K)
            torch.index_select(output, 1, buffers.columns, out=buffers.out_pre[slot])
            torch.index_select(y, 1, buffers.columns, out=buffers.out_y[slot])
        last.traced = True

    def _unflatten(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(R, P)`` stacked flat parameters into per-layer ``W (R, C, Q')`` and ``b (R, C)``."""
        weights, biases, at = [], [], 0
        for c, q in self._shapes:
            weights.append(flat[:, at : at + c * q].view(-1, c, q))
            biases.append(flat[:, at + c * q : at + c * q + c])
            at += c * q + c
        return weights, biases

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        # the rounds' thetas fill the buffer's first rows in order (stacked if they came from elsewhere)
        in_buffer = self._thetas is not None and pending[0].theta.data_ptr() == self._thetas.data_ptr()
        stacked = self._thetas[: len(pending)] if in_buffer else torch.stack([p.theta for p in pending])
        weights, biases = self._unflatten(stacked)
        self._track_stacked_box(weights, biases)
        active_rounds = torch.tensor([p.n % self.input_stride == 0 for p in pending])
        active = [i for i, g in enumerate(self.groups) if not self.factor[i] or bool(active_rounds.any())]
        if not active:
            return
        depth = len(weights)
        chosen = [self.groups[i] for i in active]
        every = [g.layer for i, g in zip(active, chosen) if not self.factor[i]]
        lowest = min(g.layer for g in chosen)
        if all(p.traced for p in pending):  # the training passes' own traces and errors, as buffered
            pre, errors, ee, out_pre, out_err = self._traces.chunk(len(pending), depth)
            inputs = [None] * depth
            for l in set(every):
                inputs[l - 1] = torch.stack([p.x for p in pending]) if l == 1 else torch.relu(pre[l - 2])
        else:  # rounds driven through on_round alone: one batched forward pass, errors by recursion
            x, y = torch.stack([p.x for p in pending]), torch.stack([p.y for p in pending])  # (R, N, D), (R, N, K)
            pre, inputs = _stacked_trace(weights, biases, x)
            e = pre[-1] - y
            errors = {depth: e}
            ee = torch.linalg.vecdot(e, e).sum(1)  # (R,): sum_d ||f_d - y_d||^2
            columns = torch.as_tensor(self._output_columns, dtype=torch.long, device=e.device)
            out_pre, out_err = pre[-1][..., columns], e[..., columns]
        # Groups on the input stride (per-sample factors) need their rounds only: below the
        # lowest group that needs every round, the recursion runs on those rounds alone.
        cut = min(every) if every else depth + 1
        grams, diags, resid = _stacked_grams(
            weights, pre, errors, full={g.layer for g in chosen if g.joint},
            diagonals={g.layer: g.neurons for g in chosen if not g.joint and g.layer < depth},
            lowest=lowest, cut=cut, subset=active_rounds)
        padded: dict[int, torch.Tensor] = {}  # x~ of every round, transposed: (Q, R N), shared by a layer's groups
        triangles: dict[int, torch.Tensor] = {}  # the upper triangle of x~ x~^T per sample, (Q(Q+1)/2, R N)
        for i in active:
            g = self.groups[i]
            if g.layer == depth:  # output neurons: J_L = I, and their columns of a_L and e kept apart
                at = torch.as_tensor([self._output_columns.index(a) for a in g.neurons])
                gram, r, a = None, out_err[..., at], out_pre[..., at]
            else:
                gram = grams[g.layer] if g.joint else diags[g.layer]
                r, a = resid[g.layer], pre[g.layer - 1]
                if not g.joint and g.neurons != list(range(r.shape[-1])):  # the neurons' own columns
                    r, a = r[..., g.neurons], a[..., g.neurons]
            if self.factor[i]:  # only the rounds on the input stride, kept as per-sample rows
                if inputs[g.layer - 1] is not None:
                    x_in = inputs[g.layer - 1][active_rounds]
                elif g.layer == 1:  # (from the training pass: the strided rounds' minibatches alone)
                    x_in = torch.stack([p.x for p, keep in zip(pending, active_rounds.tolist()) if keep])
                else:
                    x_in = torch.relu(pre[g.layer - 2][active_rounds])
                xt = torch.nn.functional.pad(x_in, (0, 1), value=1.0)
                a = a[active_rounds]
                if g.layer >= cut:  # below the cut the recursion ran on those rounds already
                    gram, r = (None if gram is None else gram[active_rounds]), r[active_rounds]
                parts = tuple(None if t is None else t.flatten(0, 1) for t in (gram, r, a, xt))
                self._add_neurons(i, *parts, ee[active_rounds])
                continue
            if g.layer not in padded:
                padded[g.layer] = _padded_transpose(inputs[g.layer - 1].flatten(0, 1))
            if gram is not None and g.layer not in triangles:  # (output neurons need none)
                triangles[g.layer] = _triangle_rows(padded[g.layer])
            parts = tuple(None if t is None else t.flatten(0, 1) for t in (gram, r, a))  # rounds x samples
            xt = padded[g.layer].T
            (self._add_layer if g.joint else self._add_neurons)(i, *parts, xt, ee, triangles.get(g.layer))

    def _track_stacked_box(self, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> None:
        """Widen every group's box by the chunk's rounds: one pass per layer over the rows that some
        group tracks (every row, without a gather, where all are tracked), shared by its groups."""
        tracked: dict[int, list[int]] = {}
        for g in self.groups:
            tracked[g.layer] = sorted(set(tracked.get(g.layer, [])) | set(g.neurons))
        extremes = {}
        for layer, rows in tracked.items():
            w, b = weights[layer - 1], biases[layer - 1]
            if len(rows) < w.shape[1]:  # (indexing, not index_select: that copies the strided views whole first)
                index = torch.as_tensor(rows, device=w.device)
                w, b = w[:, index], b[:, index]
            # amin and amax: on the CPU several times faster than aminmax over the rounds' dimension
            w_lo, w_hi, b_lo, b_hi = w.amin(0), w.amax(0), b.amin(0), b.amax(0)
            extremes[layer] = (torch.cat([w_lo, b_lo[:, None]], 1).double(),  # (rows, Q) as layer_matrix
                               torch.cat([w_hi, b_hi[:, None]], 1).double())
        for i, g in enumerate(self.groups):
            rows, (lo, hi) = tracked[g.layer], extremes[g.layer]
            at = torch.as_tensor([rows.index(a) for a in g.neurons], device=lo.device)
            self._widen_box(i, lo.index_select(0, at), hi.index_select(0, at))

    def _add(self, i: int, **parts: torch.Tensor) -> None:
        run = self.running[i]
        for key, value in parts.items():
            value = value.double()
            run[key] = value.clone() if key not in run else run[key].add_(value)

    def _add_layer(self, i, gram, r, a, xt, ee, triangle) -> None:
        """``H += sum_d (x~ x~^T) kron Gram`` on both factors' upper triangles, ``g += sum_d (Gram a - r) x~^T``.

        ``ee``: ``sum_d ||f_d - y_d||^2`` of each round; ``triangle``: :func:`_triangle_rows` of ``x~``,
        ``(q(q+1)/2, N)``."""
        c = a.shape[1]
        ga = torch.einsum("ncd,nd->nc", gram, a)
        self._add(
            i,
            # (q(q+1)/2, c(c+1)/2); index_select: far faster than advanced indexing on the CPU
            kron=triangle @ gram.reshape(-1, c * c).index_select(1, _upper_positions(c, xt.device)),
            g=(ga - r).T @ xt,
            s=((ga * a).sum() - 2 * (a * r).sum() + ee.sum()).reshape(1),
            count=torch.tensor([float(xt.shape[0])]),
            loss=ee.sum().reshape(1),
        )

    def _add_neurons(self, i, gram, r, a, xt, ee, triangle=None) -> None:
        """Neuron ``alpha``: ``J^T J = w x~ x~^T`` with ``w = Gram[alpha, alpha]`` (``gram``: ``(N, m)``; ``None``: 1).

        ``r`` and ``a`` hold the group's neurons' columns, ``(N, m)``; ``ee``, ``sum_d ||f_d - y_d||^2``
        of each round. ``H`` is kept on the upper triangle, ``(q(q+1)/2, m)``: one product of
        ``triangle`` (:func:`_triangle_rows` of ``x~``) with the weights ``w``."""
        w = torch.ones_like(r) if gram is None else gram  # gram: (N, m) diagonal entries
        u = w * a - r  # J_alpha^T c / x~
        cc = w * a * a - 2 * a * r  # ||c||^2 per sample, less ||f - y||^2 (added as the rounds' sums)
        if self.factor[i]:
            self.running[i].setdefault("rows", []).append((xt.float().cpu(), w.cpu(), u.cpu(), cc.cpu(), ee.cpu()))
            return
        if gram is None:  # an output neuron's J^T J is x~ x~^T for every neuron: one product, shared
            h = (xt.T @ xt).flatten().index_select(0, _upper_positions(xt.shape[1], xt.device))[:, None]
        else:
            h = triangle @ w
        self._add(
            i,
            h=h,
            g=u.T @ xt,
            s=cc.sum(0) + ee.sum(),
            count=torch.tensor([float(xt.shape[0])]),
            loss=ee.sum().reshape(1),
        )

    def on_epoch_end(self, epoch: int, model: ReluNet) -> None:
        self._flush()
        super().on_epoch_end(epoch, model)

    def _epoch_done(self) -> None:
        for i in range(len(self.groups)):
            if self.factor[i]:
                rows = self.running[i].pop("rows", [])
                self.snapshots[i].append({"rows": rows})
            else:
                self.snapshots[i].append({k: v.clone() for k, v in self.running[i].items()})

    def _horizon_stats(self, i: int):
        """Yield per horizon ``(H, g, s, samples, sum ||f - y||^2)`` in the scale layout, cumulative."""
        g = self.groups[i]
        m = len(g.neurons)  # for_group(i, m) keeps a neuron group's first m neurons; the data hold all
        if not self.factor[i]:
            for snap in self.snapshots[i]:
                if not snap:
                    yield None
                    continue
                if g.joint:
                    c, q = snap["g"].shape
                    kron = snap["kron"][_triangle_index(q)][:, _triangle_index(c)]  # ((q q'), (c c'))
                    h = kron.view(q, q, c, c).permute(2, 0, 3, 1).reshape(c * q, c * q)
                    yield h, snap["g"].flatten(), snap["s"], snap["count"], snap["loss"]
                else:
                    q = snap["g"].shape[1]
                    h = snap["h"][_triangle_index(q)].view(q, q, -1).permute(2, 0, 1)  # (m, q, q)
                    h = h.expand(m, -1, -1) if h.shape[0] == 1 else h[:m]  # output neurons share one H
                    yield h, snap["g"][:m], snap["s"][:m], snap["count"], snap["loss"]
            return
        total = None
        for snap in self.snapshots[i]:
            if snap["rows"]:
                xt, w, u, cc, ee = (torch.cat(parts).double() for parts in zip(*snap["rows"]))
                w, u, cc = w[:, :m], u[:, :m], cc[:, :m]
                inc = (torch.stack([(xt * w[:, j : j + 1]).T @ xt for j in range(w.shape[1])]),
                       u.T @ xt, cc.sum(0) + ee.sum(), torch.tensor([float(xt.shape[0])]), ee.sum().reshape(1))
                total = inc if total is None else tuple(t + d for t, d in zip(total, inc))
            yield total

    def solve(self) -> None:
        k = self.output_width
        optimum, used, loss = [], [], []
        for i, g in enumerate(self.groups):
            units = 1 if g.joint else len(g.neurons)
            values = np.full((units, len(self.box_scales), len(self.horizons)), np.nan)
            n_used = np.zeros((units, len(self.horizons)))
            mean_loss = np.full((units, len(self.horizons)), np.nan)
            warm: dict[tuple[int, int], np.ndarray] = {}
            for e, stats in enumerate(self._horizon_stats(i)):
                if stats is None:
                    continue
                h, gv, s, count, ee = (t.cpu().numpy() for t in stats)
                n_used[:, e], mean_loss[:, e] = count[0], ee[0] / (count[0] * k)
                hs, gs, ss = (h[None], gv[None], s) if g.joint else (h, gv, s)
                for j in range(units):
                    problem = QuadraticProblem(hs[j], gs[j], float(ss[j]), count[0] * k)
                    boxes = [self.boxes(i, scale, None if g.joint else j) for scale in self.box_scales]
                    # warm start: the previous horizon's optimum for the same scale and box
                    starts = [warm.get((j, b)) for b in range(len(boxes))]
                    for b, (solution, value) in enumerate(solve_quadratic_boxes(problem, boxes, starts)):
                        values[j, b, e], warm[(j, b)] = value, solution
            optimum += list(values)
            used += list(n_used)
            loss += list(mean_loss)
        self._store(optimum, used, loss)

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "running": self.running, "snapshots": self.snapshots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base(state)
        self.running, self.snapshots = state["running"], state["snapshots"]


def _upper_positions(k: int, device=None) -> torch.Tensor:
    """Where ``triu_indices(k, k)`` lie in a row-major ``k x k`` matrix: the storage order of the statistics."""
    i, j = torch.triu_indices(k, k, device=device)
    return i * k + j


def _triangle_index(k: int) -> torch.Tensor:
    """For each ``(i, j)`` of a ``k x k`` symmetric matrix (row-major), its position in ``triu_indices(k, k)``."""
    i, j = torch.triu_indices(k, k)
    position = torch.empty(k, k, dtype=torch.long)
    position[i, j] = torch.arange(i.numel())
    position[j, i] = torch.arange(i.numel())
    return position.flatten()


@dataclass
class _Round:
    """A buffered round: ``theta^n`` (flat, a row of the chunk buffer), the minibatch, and whether
    the training loop handed over its pass (then in the :class:`_TraceBuffers`' slot of the round)."""

    n: int
    x: torch.Tensor
    y: torch.Tensor
    theta: torch.Tensor
    traced: bool = False


@dataclass
class _TraceBuffers:
    """A chunk's worth of what the flush reads of the training passes, one slot per round, as the
    pass saw it: the pre-activations ``pre[l]`` ``(R, N, C_l)`` (index ``l - 1`` for layer ``l``),
    the loss gradients ``grads[l] = dL/da_l`` of layer ``l``, the loss ``L`` ``(R,)``, and the
    output neurons' columns of ``a_L`` and ``y`` ``(R, N, m)``. Reused from chunk to chunk;
    :meth:`chunk` converts them to what the statistics use."""

    pre: dict[int, torch.Tensor]
    grads: dict[int, torch.Tensor]
    loss: torch.Tensor
    out_pre: torch.Tensor
    out_y: torch.Tensor
    width: int  # K, the output's
    columns: torch.Tensor  # the output neurons kept
    slots: list[list[torch.Tensor]]  # per round: its views of pre, grads and loss, in that order

    @classmethod
    def like(cls, pre: list[torch.Tensor], pre_layers, error_layers, columns: list[int], rounds: int) -> _TraceBuffers:
        out = pre[-1]
        new = lambda width: out.new_empty(rounds, out.shape[0], width)  # noqa: E731
        kept, grads = {l: new(pre[l].shape[1]) for l in pre_layers}, {l: new(pre[l - 1].shape[1]) for l in error_layers}
        loss = out.new_empty(rounds)
        slots = [[kept[l][i] for l in pre_layers] + [grads[l][i] for l in error_layers] + [loss[i]] for i in range(rounds)]
        return cls(kept, grads, loss, new(len(columns)), new(len(columns)), out.shape[1],
                   torch.as_tensor(columns, dtype=torch.long, device=out.device), slots)

    def fits(self, output: torch.Tensor, rounds: int) -> bool:
        return self.out_pre.shape[:2] == (rounds, output.shape[0]) and (self.width, self.loss.dtype, self.loss.device) == (
            output.shape[1], output.dtype, output.device)

    def chunk(self, rounds: int, depth: int):
        """The first ``rounds`` slots: ``pre`` as a list over all layers (``None`` where not kept),
        the errors ``r_l = dL/da_l N K / 2``, ``sum_d ||f_d - y_d||^2 = N K L`` ``(R,)``, the output
        neurons' columns of ``a_L`` and their errors ``e = a_L - y``."""
        samples, k = self.out_pre.shape[1], self.width
        pre = [self.pre[l][:rounds] if l in self.pre else None for l in range(depth)]
        errors = {l: t[:rounds] * (samples * k / 2) for l, t in self.grads.items()}
        out_pre = self.out_pre[:rounds]
        return pre, errors, self.loss[:rounds] * (samples * k), out_pre, out_pre - self.out_y[:rounds]


def _column_square_norms(f: torch.Tensor) -> torch.Tensor:
    """``sum_k f[:, k]^2`` of ``f`` ``(R, rows, ...)``. With few rows, one fused multiply-add per row
    into a small accumulator reads ``f`` once (on the CPU about twice as fast as squaring ``f``
    and then summing); with many, the two passes."""
    if f.shape[1] > 64:
        return f.square().sum(1)
    out = f[:, 0] * f[:, 0]
    for k in range(1, f.shape[1]):
        out.addcmul_(f[:, k], f[:, k])
    return out


def _padded_transpose(x: torch.Tensor) -> torch.Tensor:
    """``x~ = [x, 1]`` of ``x`` ``(N, Q - 1)``, transposed: a contiguous ``(Q, N)``."""
    out = x.new_empty(x.shape[1] + 1, x.shape[0])
    out[:-1] = x.T
    out[-1] = 1.0
    return out


def _triangle_rows(xt: torch.Tensor) -> torch.Tensor:
    """The upper triangle of ``x x^T`` per sample, from ``x`` transposed ``(Q, N)``: ``(Q(Q+1)/2, N)``
    with rows in ``triu_indices`` order. One product per row ``i`` (``x_i x_j`` for ``j >= i``), each
    writing contiguous memory: several times faster than gathering both factors by index."""
    q, n = xt.shape
    out = xt.new_empty(q * (q + 1) // 2, n)
    at = 0
    for i in range(q):
        torch.mul(xt[i:], xt[i : i + 1], out=out[at : at + q - i])
        at += q - i
    return out


def _stacked_trace(weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor):
    """Forward pass of a dense :class:`ReluNet` with a different ``theta`` per round.

    Args: ``weights[l]`` ``(R, C, Q')``, ``biases[l]`` ``(R, C)``, ``x`` ``(R, N, D)``.
    Returns: pre-activations ``a_l`` and layer inputs ``x_{l-1}``, each ``(R, N, .)``.
    """
    pre, inputs, h = [], [], x
    for l, (w, b) in enumerate(zip(weights, biases)):
        inputs.append(h)
        pre.append(torch.baddbmm(b[:, None, :], h, w.transpose(1, 2)))
        if l < len(weights) - 1:
            h = torch.relu(pre[-1])
    return pre, inputs


def _output_factor(w_last: torch.Tensor) -> torch.Tensor:
    """``F`` with ``F^T F = W_L^T W_L`` per round: ``W_L`` itself, or a Cholesky factor when ``K > C``."""
    k, c = w_last.shape[1:]
    if k <= c:
        return w_last
    a = (w_last.transpose(1, 2) @ w_last).double()
    chol, info = torch.linalg.cholesky_ex(a)
    if bool(info.any()):  # singular: a square root from the eigendecomposition
        lam, q = torch.linalg.eigh(a)
        chol = q * lam.clamp_min(0).sqrt()[:, None, :]
    return chol.transpose(1, 2).to(w_last.dtype)


def _stacked_grams(weights: list[torch.Tensor], pre: list[torch.Tensor], errors: dict[int, torch.Tensor], full: set[int],
                   diagonals: Mapping[int, Sequence[int]], lowest: int, cut: int = 0,
                   subset: torch.Tensor | None = None):
    """Per-sample Grams ``Gram_l = J_L^T J_L`` of the output by the pre-activations, and ``r_l = J_L^T e``.

    ``J_L`` is carried as a factor ``F_l`` with ``F_l^T F_l = Gram_l`` and only ``min(K, C_{L-1})``
    rows: ``F_{L-1} = F D_{L-1}`` with ``F^T F = W_L^T W_L``, then ``F_l = F_{l+1} W_{l+1} D_l``.
    The factors are laid out ``(R, rows, N, C_l)``, so each step is one GEMM per round with
    rows x samples as the long dimension and the mask a broadcast over the contiguous last
    dimension. ``F_{L-1}`` is never formed: the first step is ``F (D_{L-1} W_{L-1})``, whose
    per-sample operand has ``C_{L-1} C_{L-2}`` entries instead of ``rows C_{L-1}``.
    A full Gram is formed only where a layer is solved whole; a neuron's ``Gram_l[alpha, alpha]``
    is the squared norm of column ``alpha`` of ``F_l``.

    Args:
        weights: ``W_l`` ``(R, C_l, C_{l-1})`` per layer, one per round.
        pre: pre-activations ``(R, N, C_l)``.
        errors: ``r_l`` ``(R, N, C_l)`` where already known (from the training pass's gradients), or
            ``{L: e}``, the output errors ``(R, N, K)``, from which the rest are computed.
        full: layers whose full ``(R, N, C, C)`` Gram is returned.
        diagonals: ``{l: neurons}`` whose ``(R, N, m)`` diagonal entries are returned.
        lowest: the lowest layer needed.
        cut, subset: below layer ``cut`` only the rounds ``subset`` (a bool ``(R,)``) are computed.

    Returns:
        ``grams[l]``, ``diags[l]`` and ``resid[l]`` ``(R, N, C_l)`` (``R`` = the subset's rounds below
        ``cut``; ``resid`` where given or computable).
    """
    depth = len(weights)
    grams: dict[int, torch.Tensor | None] = {depth: None}
    diags: dict[int, torch.Tensor] = {}
    dtype = weights[0].dtype
    resid = {depth: errors[depth]} if depth in errors else {}
    factor = above = None  # F (R, rows, C_{L-1}); the mask D_{l+1} of the layer above
    f = None  # F_l, (R, rows, N, C_l), from the second hidden layer from the top down
    sliced = False  # whether the carried factor state holds the strided rounds only
    for l in range(depth - 1, lowest - 1, -1):
        mask, w, r_next = (pre[l - 1] > 0).to(dtype), weights[l], resid.get(l + 1)  # w: layer l+1, (R, C', C)
        gram_above = grams.get(l + 1)
        if subset is not None and l < cut:
            mask, w = mask[subset], w[subset]
            if l == min(cut, depth) - 1:  # the first layer below the cut: what is carried down, too
                r_next = None if r_next is None else r_next[subset]
                gram_above = None if gram_above is None else gram_above[subset]
                if not sliced:
                    f, factor, above = (None if t is None else t[subset] for t in (f, factor, above))
                    sliced = True
        if l in errors:
            resid[l] = errors[l] if subset is None or l >= cut else errors[l][subset]
        elif r_next is not None:
            resid[l] = torch.bmm(r_next, w) * mask
        r, n, c = mask.shape
        chosen = list(diagonals.get(l, ()))
        if l == depth - 1:  # F_{L-1}[n] = F D_{L-1}[n]: its Gram and column norms without forming it
            factor = _output_factor(w)
            if chosen:
                norms = factor.square().sum(1)  # ||W_L[:, alpha]||^2, (R, C)
                diags[l] = norms[:, None, chosen] * mask[..., chosen]
            if l in full:
                product = (factor.transpose(1, 2) @ factor)[:, None]  # W_L^T W_L, (R, 1, C, C)
                grams[l] = product * mask[..., :, None] * mask[..., None, :]
            above = mask
            continue
        from_above = bool(chosen) and l not in full and gram_above is not None
        if from_above:  # Gram_l[a, a] = D_l[a] W_{l+1}[:, a]^T Gram_{l+1} W_{l+1}[:, a]: no factor needed
            # as one product per round: the flat Gram by the flat outer products W[:, a] W[:, a]^T
            c_above, w_chosen = gram_above.shape[-1], w[..., chosen]
            outer = (w_chosen[:, :, None, :] * w_chosen[:, None, :, :]).reshape(r, c_above * c_above, -1)
            diags[l] = torch.bmm(gram_above.reshape(r, n, c_above * c_above), outer) * mask[..., chosen]
            if l == lowest:
                continue
            if subset is not None and l - 1 < cut and not sliced:  # F_l serves the strided rounds below only
                f, factor, above = (None if t is None else t[subset] for t in (f, factor, above))
                mask, w, sliced = mask[subset], w[subset], True
                r = mask.shape[0]
        narrowed = l == lowest and l not in full and bool(chosen)  # nothing below reads F_l: its
        if narrowed:  # neurons' columns alone
            w, mask, c = w[..., chosen], mask[..., chosen], len(chosen)
        if f is None:  # F_l = F (D_{L-1} W_{L-1}) D_l: D_{L-1} W_{L-1} laid out (R, C_{L-1}, N, C_l)
            c_above = w.shape[1]
            # the masked rows as outer products (one batched product with a single term each:
            # exact, and on the CPU about twice as fast as the broadcast multiplication)
            masked = torch.bmm(above.transpose(1, 2).reshape(r * c_above, n, 1), w.reshape(r * c_above, 1, c))
            f = torch.bmm(factor, masked.view(r, c_above, n * c)).view(r, -1, n, c)
        else:
            rows = f.shape[1]
            f = torch.bmm(f.view(r, rows * n, -1), w).view(r, rows, n, c)
        f.mul_(mask[:, None])  # D_l
        if l in full:
            per_sample = f.permute(0, 2, 1, 3).reshape(r * n, -1, c)  # (R N, rows, C)
            grams[l] = torch.bmm(per_sample.transpose(1, 2), per_sample).view(r, n, c, c)
            if chosen:
                diags[l] = grams[l].diagonal(dim1=2, dim2=3)[..., chosen]
        elif chosen and not from_above:
            norms = _column_square_norms(f)
            diags[l] = norms if narrowed else norms[..., chosen]  # (R, N, m)
        above = mask
    return grams, diags, resid


# --------------------------------------------------------------------------- cross-entropy

class CEFactorRecorder(TaylorRecorder):
    """Per-sample Jacobian factors of small scales on every ``stride``-th round (cross-entropy).

    Dense layers keep ``(J^L_l[:, :, alpha], x~)`` per sample (``K C + Q`` numbers), conv
    layers the per-neuron Jacobians ``(K, Q)``; with each, the offset ``b = f - J theta^n``
    so that ``b + J V`` is the Taylor approximation. Whole conv layers beyond the first
    are too large for this: :class:`ntaylor_lib.replay.CEReplayRecorder` replays them from weight snapshots.

    Args:
        groups: the scales (:class:`Group`).
        stride: record rounds ``n`` with ``n % stride == 0``.
        samples: samples kept per recorded round (the first of the shuffled minibatch; 0: all).
        box_scales: widening of the iterates' box for the comparator (``inf``: none).
        dtype: storage type of the factors (the solve runs in float64).
    """

    name = "taylor_ce"
    per_group = ("lower", "upper", "rows", "thetas")

    def __init__(self, groups, stride: int = 1, samples: int = 0, box_scales=(1.0,), dtype=torch.float32,
                 solve_at_end=True, tol: float = 1e-10):
        super().__init__(groups, box_scales, solve_at_end)
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

    def solve(self) -> None:
        per_round = self.rows[0][0]["y"].shape[0] if self.groups and self.rows[0] else 0
        recorded = np.asarray(self.recorded)
        counts = np.array([(recorded < h).sum() for h in self.horizons])  # recorded rounds per horizon
        losses = np.asarray(self.recorded_loss)
        mean_loss = np.array([losses[:c].mean() if c else np.nan for c in counts])
        optimum, used, loss = [], [], []
        for i, g in enumerate(self.groups):
            for j in [None] if g.joint else range(len(g.neurons)):
                data = self.problem_data(i, j)
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
                        previous, values[b, e] = solve_cross_entropy(self.problem(data, c * per_round), starts, box, self.tol)
                optimum.append(values)
                used.append(counts * per_round)
                loss.append(mean_loss)
        self._store(optimum, used, loss)

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "rows": self.rows, "thetas": self.thetas, "recorded": self.recorded,
                "recorded_loss": self.recorded_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base(state)
        self.rows, self.recorded = state["rows"], list(state["recorded"])
        self.recorded_loss, self.thetas = list(state["recorded_loss"]), state["thetas"]
