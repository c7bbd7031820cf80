"""Exact streaming MSE statistics of layer and neuron scales (the autoencoder's Taylor optimum).

:class:`MSEStatsRecorder` accumulates the sufficient statistics ``H = sum J^T J``,
``g = sum J^T c``, ``s = sum ||c||^2`` with ``c = J theta^n_S - (f - y)`` over every sample
of every round, never forming ``J``: per sample ``J^T J = (x~ x~^T) kron (J_L^T J_L)``,
and the Grams ``J_L^T J_L`` of every layer come from one backward recursion
``Gram_l = D_l W_{l+1}^T Gram_{l+1} W_{l+1} D_l`` (:mod:`ntaylor_lib.taylor.recorders.gram`).
Memory per epoch is independent of the rounds. Neurons with a wide input (the input
layer's, ``Q = 785``) keep per-sample factors (``x~``, ``||J_L[:, alpha]||^2``, ...) on
every ``input_stride``-th round instead, reduced to statistics when solving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ...runs.models import ReluNet
from ..solver import QuadraticProblem, minimum_norm_solutions, solve_quadratic_boxes
from .base import Group, TaylorRecorder
from .gram import (
    padded_transpose,
    stacked_grams,
    stacked_trace,
    triangle_index,
    triangle_rows,
    upper_positions,
    weighted_grams,
)


class MSEStatsRecorder(TaylorRecorder):
    """Exact streaming MSE statistics for layer and neuron scales of a dense :class:`ReluNet`.

    Rounds are buffered (``theta^n`` as one flat copy, the minibatch by reference) and
    processed ``chunk_rounds`` at a time, with the round as a batch dimension: one
    backward Gram recursion and one product per statistic per chunk instead of per round,
    so the per-round cost is a copy of the weights. Under :func:`ntaylor_lib.runs.training.train`
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
        horizons: when to solve: ``every`` epoch end, or ``log:K``
            (:func:`~ntaylor_lib.taylor.recorders.base.horizon_epochs`).
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
                 chunk_rounds: int = 64, horizons: str = "every"):
        super().__init__(groups, box_scales, solve_at_end, horizons)
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
        # per-round sums of ||f - y||^2, products in float64 (checkpoints of other layouts differ).
        return {**super().spec(), "input_stride": self.input_stride, "factor_width": self.factor_width,
                "layout": "triangles-v4"}

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
            pre, inputs = stacked_trace(weights, biases, x)
            e = pre[-1] - y
            errors = {depth: e}
            ee = torch.linalg.vecdot(e, e).sum(1)  # (R,): sum_d ||f_d - y_d||^2
            columns = torch.as_tensor(self._output_columns, dtype=torch.long, device=e.device)
            out_pre, out_err = pre[-1][..., columns], e[..., columns]
        # Groups on the input stride (per-sample factors) need their rounds only: below the
        # lowest group that needs every round, the recursion runs on those rounds alone.
        cut = min(every) if every else depth + 1
        grams, diags, resid = stacked_grams(
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
                # in float64: x~_i x~_j of float32 inputs is exact there, so every sample's x~ x~^T is
                # positive semidefinite and so are the sums (see stacked_grams)
                padded[g.layer] = padded_transpose(inputs[g.layer - 1].flatten(0, 1).double())
            if gram is not None and g.layer not in triangles:  # (output neurons need none)
                triangles[g.layer] = triangle_rows(padded[g.layer])
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

        ``ee``: ``sum_d ||f_d - y_d||^2`` of each round; ``triangle``: :func:`triangle_rows` of ``x~``,
        ``(q(q+1)/2, N)``."""
        c = a.shape[1]
        gram, r, a, ee = gram.double(), r.double(), a.double(), ee.double()
        ga = torch.einsum("ncd,nd->nc", gram, a)
        self._add(
            i,
            # (q(q+1)/2, c(c+1)/2); index_select: far faster than advanced indexing on the CPU
            kron=triangle @ gram.reshape(-1, c * c).index_select(1, upper_positions(c, xt.device)),
            g=(ga - r).T @ xt,
            s=((ga * a).sum() - 2 * (a * r).sum() + ee.sum()).reshape(1),
            count=torch.tensor([float(xt.shape[0])]),
            loss=ee.sum().reshape(1),
        )

    def _add_neurons(self, i, gram, r, a, xt, ee, triangle=None) -> None:
        """Neuron ``alpha``: ``J^T J = w x~ x~^T`` with ``w = Gram[alpha, alpha]`` (``gram``: ``(N, m)``; ``None``: 1).

        ``r`` and ``a`` hold the group's neurons' columns, ``(N, m)``; ``ee``, ``sum_d ||f_d - y_d||^2``
        of each round. ``H`` is kept on the upper triangle, ``(q(q+1)/2, m)``: one product of
        ``triangle`` (:func:`triangle_rows` of ``x~``) with the weights ``w``."""
        if not self.factor[i]:  # accumulated in float64, as the triangle is (see _flush)
            gram, r, a, ee = (None if t is None else t.double() for t in (gram, r, a, ee))
        w = torch.ones_like(r) if gram is None else gram  # gram: (N, m) diagonal entries
        u = w * a - r  # J_alpha^T c / x~
        cc = w * a * a - 2 * a * r  # ||c||^2 per sample, less ||f - y||^2 (added as the rounds' sums)
        if self.factor[i]:
            self.running[i].setdefault("rows", []).append((xt.float().cpu(), w.cpu(), u.cpu(), cc.cpu(), ee.cpu()))
            return
        if gram is None:  # an output neuron's J^T J is x~ x~^T for every neuron: one product, shared
            h = (xt.T @ xt).flatten().index_select(0, upper_positions(xt.shape[1], xt.device))[:, None]
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

    def _horizon_stats(self, i: int, device: torch.device | str = "cpu"):
        """Yield per horizon ``(H, g, s, samples, sum ||f - y||^2)`` in the scale layout, cumulative
        (a factor group's Grams formed on ``device``)."""
        g = self.groups[i]
        m = len(g.neurons)  # for_group(i, m) keeps a neuron group's first m neurons; the data hold all
        if not self.factor[i]:
            for snap in self.snapshots[i]:
                if not snap:
                    yield None
                    continue
                if g.joint:
                    c, q = snap["g"].shape
                    kron = snap["kron"][triangle_index(q)][:, triangle_index(c)]  # ((q q'), (c c'))
                    h = kron.view(q, q, c, c).permute(2, 0, 3, 1).reshape(c * q, c * q)
                    yield h, snap["g"].flatten(), snap["s"], snap["count"], snap["loss"]
                else:
                    q = snap["g"].shape[1]
                    h = snap["h"][triangle_index(q)].view(q, q, -1).permute(2, 0, 1)  # (m, q, q)
                    h = h.expand(m, -1, -1) if h.shape[0] == 1 else h[:m]  # output neurons share one H
                    yield h, snap["g"][:m], snap["s"][:m], snap["count"], snap["loss"]
            return
        total = None
        for snap in self.snapshots[i]:
            if snap["rows"]:
                xt, w, u, cc, ee = (torch.cat(parts).to(device) for parts in zip(*snap["rows"]))
                w, u, cc = w[:, :m], u[:, :m].double(), cc[:, :m].double()
                # The same sample recorded at several rounds (an image seen again in a later epoch: at
                # the paper profile each of MNIST's 60k about 10 times a run) is one row of the Grams,
                # with its rounds' weights summed, since H is linear in the weights: the horizons
                # spanning several epochs form their Grams over half their rows or fewer.
                distinct, inverse = torch.unique(xt, dim=0, return_inverse=True)
                summed = torch.zeros(len(distinct), m, dtype=torch.float64, device=xt.device)
                summed.index_add_(0, inverse, w.double())
                inc = (weighted_grams(distinct, summed), u.T @ xt.double(), cc.sum(0) + ee.double().sum(),
                       torch.tensor([float(xt.shape[0])]), ee.double().sum().reshape(1))
                total = inc if total is None else tuple(t + d for t, d in zip(total, inc))
            yield total

    def _solve(self, on: str | None) -> None:
        device, batched = self._solve_target(on)
        k = self.output_width
        optimum, used, loss = [], [], []
        bar = self._solve_bar(sum(1 if g.joint else len(g.neurons) for g in self.groups) * len(self.horizons))
        for i, g in enumerate(self.groups):
            units = 1 if g.joint else len(g.neurons)
            values = np.full((units, len(self.box_scales), len(self.horizons)), np.nan)
            n_used = np.zeros((units, len(self.horizons)))
            mean_loss = np.full((units, len(self.horizons)), np.nan)
            warm: dict[tuple[int, int], np.ndarray] = {}
            for e, stats in enumerate(self._horizon_stats(i, device)):
                if stats is None:
                    continue
                free = None
                if batched:  # the unconstrained optima of the group's scales: one batched eigh on the device
                    h_d, g_d = (t.to(device, torch.float64) for t in stats[:2])
                    free = minimum_norm_solutions(*((h_d[None], g_d[None]) if g.joint else (h_d, g_d))).cpu().numpy()
                h, gv, s, count, ee = (t.cpu().numpy() for t in stats)
                n_used[:, e], mean_loss[:, e] = count[0], ee[0] / (count[0] * k)
                hs, gs, ss = (h[None], gv[None], s) if g.joint else (h, gv, s)
                for j in range(units):
                    problem = QuadraticProblem(hs[j], gs[j], float(ss[j]), count[0] * k)
                    boxes = [self.boxes(i, scale, None if g.joint else j) for scale in self.box_scales]
                    # warm start: the previous horizon's optimum for the same scale and box
                    starts = [warm.get((j, b)) for b in range(len(boxes))]
                    solved = solve_quadratic_boxes(problem, boxes, starts, None if free is None else free[j])
                    for b, (solution, value) in enumerate(solved):
                        values[j, b, e], warm[(j, b)] = value, solution
                    bar.update()
            optimum += list(values)
            used += list(n_used)
            loss += list(mean_loss)
        bar.close()
        self._store(optimum, used, loss)

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "running": self.running, "snapshots": self.snapshots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base(state)
        self.running, self.snapshots = state["running"], state["snapshots"]


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
        slots = [[kept[l][i] for l in pre_layers] + [grads[l][i] for l in error_layers] + [loss[i]]
                 for i in range(rounds)]
        return cls(kept, grads, loss, new(len(columns)), new(len(columns)), out.shape[1],
                   torch.as_tensor(columns, dtype=torch.long, device=out.device), slots)

    def fits(self, output: torch.Tensor, rounds: int) -> bool:
        return (self.out_pre.shape[:2] == (rounds, output.shape[0])
                and (self.width, self.loss.dtype, self.loss.device) == (output.shape[1], output.dtype, output.device))

    def chunk(self, rounds: int, depth: int):
        """The first ``rounds`` slots: ``pre`` as a list over all layers (``None`` where not kept),
        the errors ``r_l = dL/da_l N K / 2``, ``sum_d ||f_d - y_d||^2 = N K L`` ``(R,)``, the output
        neurons' columns of ``a_L`` and their errors ``e = a_L - y``."""
        samples, k = self.out_pre.shape[1], self.width
        pre = [self.pre[l][:rounds] if l in self.pre else None for l in range(depth)]
        errors = {l: t[:rounds] * (samples * k / 2) for l, t in self.grads.items()}
        out_pre = self.out_pre[:rounds]
        return pre, errors, self.loss[:rounds] * (samples * k), out_pre, out_pre - self.out_y[:rounds]
