"""The paper's diagnostics on your own ReLU network, in your own training loop.

::

    diag = attach(model, loss="cross_entropy", scales=["network", "layer:2", "neurons:1"], probe=x_probe)
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = diag.step(x, y)      # the round's loss L_n at theta^n, recorded; backpropagate it
            loss.backward()
            optimizer.step()            # any torch.optim optimizer
        diag.epoch_end()                # a horizon, and the activation configuration on the probe
    rows = diag.regret_table()          # regret against the hindsight Taylor optimum, per scale, box, horizon
    diag.slopes(), diag.exploration()   # Theorem 2's log-log slopes; novelty, switches, volume

:meth:`TaylorDiagnostics.step` runs the training forward pass itself (the one whose loss
you backpropagate), so the Taylor approximations it records are those of the function the
optimizer steps on, dropout masks included. What it keeps per scale is what the book's
recorders keep: for squared error, the running statistics ``sum J^T J``, ``sum J^T c``,
``sum ||c||^2`` of Theorem 2's quadratic (the Jacobian of a dense layer's weights never
formed: it is the outer product of the backpropagated error and the layer input), snapshot
at each horizon and solved exactly; for cross-entropy, the per-sample Jacobian factors of
every ``stride``-th round (``samples`` of its examples), solved by L-BFGS-B. Horizons are
the epoch ends you mark, and the comparator box is spanned by the iterates of every round,
widened ``box_scales`` times.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..exploration.configurations import pack_bits, unpack_bits
from ..exploration.metrics import exploration_metrics, exploration_summary, novelty, switches
from ..runs.allocator import large_blocks_mapped
from ..runs.profiles import ParameterError
from ..taylor.jacobians import RULES, layer_matrix
from ..taylor.recorders.base import horizon_epochs
from ..taylor.regret import regret_table, slopes
from ..taylor.solver import (
    CrossEntropyProblem,
    QuadraticProblem,
    dense_operator,
    iterate_box,
    jacobian_operator,
    one_host_blas_thread,
    solve_cross_entropy,
    solve_quadratic_boxes,
)
from .sequential import modules_of, output_by_preactivation, trace, weight_layers

LOSSES = ("mse", "cross_entropy")
#: Above this many parameters a scale's problem (``P x P`` statistics, or ``K x P`` numbers per
#: recorded sample) is refused: choose layers or neurons instead, or raise ``max_parameters``.
MAX_PARAMETERS = 20_000
_SCALE = re.compile(r"^(network|layer:(\d+)|neurons:(\d+)(?::([\d,]+))?)$")


@dataclass(frozen=True)
class ScaleSpec:
    """A scale: every weight layer (``layer=None``), weight layer ``layer``, or its ``neurons`` one by one."""

    layer: int | None
    neurons: tuple[int, ...] | None = None  # None: the layer (or network) as one scale

    def labels(self) -> list[str]:
        if self.layer is None:
            return ["network"]
        if self.neurons is None:
            return [f"layer{self.layer}"]
        return [f"layer{self.layer}/neuron{a}" for a in self.neurons]


def parse_scale(text: str, units: Sequence[int]) -> ScaleSpec:
    """``network``, ``layer:L`` or ``neurons:L`` (every unit of weight layer ``L``) or ``neurons:L:0,5,9``."""
    match = _SCALE.match(text.replace(" ", ""))
    if not match:
        raise ParameterError(f"scale {text!r} is not one of: network, layer:L, neurons:L, neurons:L:i,j,...")
    if match.group(1) == "network":
        return ScaleSpec(None)
    layer = int(match.group(2) or match.group(3))
    if not 1 <= layer <= len(units):
        raise ParameterError(f"scale {text!r}: the network has weight layers 1..{len(units)}")
    if match.group(2):
        return ScaleSpec(layer)
    chosen = tuple(range(units[layer - 1])) if match.group(4) is None else tuple(
        int(a) for a in match.group(4).split(",") if a)
    if not chosen or any(not 0 <= a < units[layer - 1] for a in chosen):
        raise ParameterError(f"scale {text!r}: layer {layer} has units 0..{units[layer - 1] - 1}")
    return ScaleSpec(layer, chosen)


class TaylorDiagnostics:
    """Regret against the hindsight Taylor optimum and exploration, recorded along your training loop.

    Made by :func:`attach`; see the module's docstring for the loop.
    """

    def __init__(self, model: nn.Sequential, loss: str, scales: Sequence[str], box_scales: Sequence[float],
                 stride: int, samples: int, probe: torch.Tensor | None, horizons: str, epochs: int | None,
                 max_parameters: int, tol: float) -> None:
        if loss not in LOSSES:
            raise ParameterError(f"loss={loss!r} is not one of {', '.join(LOSSES)}")
        self.model, self.loss = model, loss
        self.modules = modules_of(model)
        self.layers = [self.modules[i] for i in weight_layers(self.modules)]
        units = [m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in self.layers]
        self.scales = [parse_scale(s, units) for s in scales]
        if not self.scales and probe is None:
            raise ParameterError("scales is empty: name at least one of network, layer:L, neurons:L "
                                 "(or give a probe to record exploration alone)")
        self.box_scales = [float(b) for b in box_scales]
        if not self.box_scales or any(not (b > 0) for b in self.box_scales):
            raise ParameterError(f"box_scales={list(box_scales)!r} must be numbers > 0 (inf: unconstrained)")
        if int(stride) < 1 or int(samples) < 0:
            raise ParameterError(f"stride={stride!r} must be >= 1 and samples={samples!r} >= 0")
        self.stride, self.samples, self.tol = int(stride), int(samples), float(tol)
        self.scheduled = None if horizons == "every" else set(horizon_epochs(horizons, _need_epochs(epochs)))
        for spec in self.scales:
            size = sum(self._size(l) for l in self._layers_of(spec)) if spec.neurons is None else self._size(
                spec.layer, 1)
            if size > max_parameters:
                raise ParameterError(f"scale {spec.labels()[0]} has {size:,} parameters, above max_parameters="
                                     f"{max_parameters:,}: choose layers or neurons, or raise max_parameters")
        self.probe = probe
        self.round_loss: list[float] = []
        self.rounds, self.epoch = 0, 0
        self.horizons: list[int] = []
        self.horizon_epoch: list[int] = []
        self.lower: list[torch.Tensor | None] = [None] * len(self.scales)
        self.upper: list[torch.Tensor | None] = [None] * len(self.scales)
        self.stats: list[dict[str, torch.Tensor]] = [{} for _ in self.scales]  # mse: running sums
        self.snapshots: list[list[dict[str, torch.Tensor]]] = [[] for _ in self.scales]  # mse: at horizons
        self.rows: list[list[dict[str, torch.Tensor]]] = [[] for _ in self.scales]  # ce: recorded factors
        self.recorded: list[int] = []
        self.recorded_loss: list[float] = []
        self.thetas: list[list[torch.Tensor]] = [[] for _ in self.scales]  # ce: theta_S of the recorded rounds
        self.outputs = 0
        self.configurations: list[np.ndarray] = []
        self.configuration_epochs: list[int] = []
        self._solved: dict[str, np.ndarray] | None = None
        if probe is not None:
            self._configure()

    # ------------------------------------------------------------------ scales and parameters

    def _layers_of(self, spec: ScaleSpec) -> list[int]:
        return list(range(1, len(self.layers) + 1)) if spec.layer is None else [spec.layer]

    def _size(self, l: int, rows: int | None = None) -> int:
        w = self.layers[l - 1].weight
        return (w.shape[0] if rows is None else rows) * (w[0].numel() + 1)

    def _theta(self, spec: ScaleSpec) -> torch.Tensor:
        """``theta_S``: ``(units, P)`` for a neuron scale (one row per neuron), ``(1, P)`` otherwise."""
        with torch.no_grad():
            if spec.neurons is not None:
                return layer_matrix(self.layers[spec.layer - 1])[list(spec.neurons)].double()
            return torch.cat([layer_matrix(self.layers[l - 1]).flatten() for l in self._layers_of(spec)])[
                None].double()

    def _track_box(self) -> None:
        for i, spec in enumerate(self.scales):
            theta = self._theta(spec)
            self.lower[i] = theta.clone() if self.lower[i] is None else torch.minimum(self.lower[i], theta)
            self.upper[i] = theta.clone() if self.upper[i] is None else torch.maximum(self.upper[i], theta)

    # ------------------------------------------------------------------ the loop

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Record round ``n``: run the training forward pass at ``theta^n`` and return its loss ``L_n``.

        Call it before ``optimizer.step()``, and backpropagate what it returns: that pass is
        the one whose Taylor approximations are recorded (its dropout masks included).
        """
        self._solved = None
        if not self.scales:  # exploration alone: the plain forward pass, nothing recorded per round
            loss = self._loss(self.model(x), y)
            self.round_loss.append(float(loss.detach()))
            self.rounds += 1
            return loss
        t = trace(self.modules, x)
        if t.output.dim() != 2:
            raise ParameterError(f"the network's output has shape {tuple(t.output.shape)}; the diagnostics need "
                                 "(batch, outputs): end the Sequential with a Linear layer or a Flatten")
        loss = self._loss(t.output, y)
        self.outputs = t.output.shape[1]
        self.round_loss.append(float(loss.detach()))
        self._rows_of_layer: dict[int, torch.Tensor] = {}  # J^L_l of this round, shared by the scales
        self._track_box()
        if self.loss == "mse":
            self._add_statistics(t, y)
        elif self.rounds % self.stride == 0:
            self._add_rows(t, y)
        self.rounds += 1
        return loss

    def epoch_end(self) -> None:
        """Mark the end of an epoch: a horizon (when scheduled), and a configuration on the probe."""
        self.epoch += 1
        if self.probe is not None:
            self._configure()
        if self.scheduled is not None and self.epoch not in self.scheduled:
            return
        self.horizons.append(self.rounds)
        self.horizon_epoch.append(self.epoch)
        for i in range(len(self.scales)):
            if self.loss == "mse":
                self.snapshots[i].append({k: v.clone() for k, v in self.stats[i].items()})

    def _loss(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(f, y) if self.loss == "mse" else F.cross_entropy(f, y)

    # ------------------------------------------------------------------ what is kept

    def _jacobian_parts(self, t, spec: ScaleSpec) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
        """Per weight layer of the scale: ``("dense", G (N, K, C), x~ (N, Q))``, or ``("full", J (N, K, C, Q), None)``
        for a conv layer."""
        parts = []
        for l in self._layers_of(spec):
            layer = self.layers[l - 1]
            if l not in self._rows_of_layer:
                self._rows_of_layer[l] = output_by_preactivation(self.modules, t, l)
            g = self._rows_of_layer[l] if spec.neurons is None else self._rows_of_layer[l][:, :, list(spec.neurons)]
            inputs = t.inputs[l - 1].detach()
            if isinstance(layer, nn.Linear):
                parts.append(("dense", g, F.pad(inputs, (0, 1), value=1.0)))
            else:
                parts.append(("full", RULES[type(layer)](layer, inputs, g), None))
        return parts

    @torch.no_grad()
    def _add_statistics(self, t, y: torch.Tensor) -> None:
        """Squared error: add the round's ``sum J^T J``, ``sum J^T c``, ``sum ||c||^2`` (``c = J theta - (f - y)``)."""
        f = t.output.detach().double()
        residual = f - y.double()
        for i, spec in enumerate(self.scales):
            theta = self._theta(spec)
            parts = self._jacobian_parts(t, spec)
            if spec.neurons is not None:  # one problem per neuron: J_a = G[:, :, a] x~ (dense) or J[:, :, a]
                kind, g, xt = parts[0]
                if kind == "dense":
                    g, xt = g.double(), xt.double()
                    w = (g * g).sum(1)  # (N, C): ||G[n, :, a]||^2
                    h = torch.einsum("nc,nq,nr->cqr", w, xt, xt)
                    shift = g * (xt @ theta.T)[:, None, :]  # (N, K, C): J_a theta_a
                    c = shift - residual[:, :, None]
                    gv = torch.einsum("nkc,nkc,nq->cq", g, c, xt)
                    s = (c * c).sum((0, 1))
                else:
                    j = g.double()  # (N, K, C, Q)
                    h = torch.einsum("nkcq,nkcr->cqr", j, j)
                    c = torch.einsum("nkcq,cq->nkc", j, theta) - residual[:, :, None]
                    gv = torch.einsum("nkcq,nkc->cq", j, c)
                    s = (c * c).sum((0, 1))
            elif len(parts) == 1 and parts[0][0] == "dense":
                # a dense layer whole: J^T J = sum_n (G^T G)_n kron x~_n x~_n^T, never forming J (N, K, C Q)
                _, g, xt = parts[0]
                g, xt = g.double(), xt.double()
                units = g.shape[2]
                c = torch.einsum("nkc,nc->nk", g, xt @ theta[0].view(units, -1).T) - residual
                gram = torch.einsum("nkc,nkd->ncd", g, g)
                h = torch.einsum("ncd,nq,nr->cqdr", gram, xt, xt).reshape(1, units * xt.shape[1], -1)
                gv = torch.einsum("nkc,nk,nq->cq", g, c, xt).reshape(1, -1)
                s = (c * c).sum()[None]
            else:  # conv layers, or several layers (the network): the per-sample Jacobian itself
                j = torch.cat([self._flat(kind, g, xt) for kind, g, xt in parts], dim=2)  # (N, K, P)
                c = j @ theta[0] - residual
                h, gv, s = (torch.einsum("nkp,nkq->pq", j, j)[None], torch.einsum("nkp,nk->p", j, c)[None],
                            (c * c).sum()[None])
            counts = torch.tensor([float(f.shape[0])], dtype=torch.float64)
            loss = (residual * residual).sum()[None]
            inc = {"h": h, "g": gv, "s": s, "count": counts, "loss": loss}
            self.stats[i] = inc if not self.stats[i] else {k: self.stats[i][k] + inc[k] for k in inc}

    @staticmethod
    def _flat(kind: str, g: torch.Tensor, xt: torch.Tensor | None) -> torch.Tensor:
        """A layer's per-sample Jacobian ``(N, K, C Q)`` in the layout of :func:`layer_matrix` flattened."""
        if kind == "dense":
            return torch.einsum("nkc,nq->nkcq", g.double(), xt.double()).flatten(2)
        return g.double().flatten(2)

    @torch.no_grad()
    def _add_rows(self, t, y: torch.Tensor) -> None:
        """Cross-entropy: keep the round's factors for ``samples`` of its examples."""
        keep = self.samples or y.shape[0]
        f = t.output.detach()[:keep]
        self.recorded.append(self.rounds)
        self.recorded_loss.append(float(F.cross_entropy(f, y[:keep])))
        for i, spec in enumerate(self.scales):
            theta = self._theta(spec).to(f.dtype)
            parts = [(kind, g[:keep], None if xt is None else xt[:keep])
                     for kind, g, xt in self._jacobian_parts(t, spec)]
            if spec.neurons is not None:
                kind, g, xt = parts[0]
                row = {"g": g, "x": xt} if kind == "dense" else {"j": g}
                shift = g * (xt @ theta.T)[:, None, :] if kind == "dense" else torch.einsum("nkcq,cq->nkc", g, theta)
                row["offset"] = f[:, :, None] - shift
            elif len(parts) == 1 and parts[0][0] == "dense":  # the factors, as for one neuron
                _, g, xt = parts[0]
                shift = torch.einsum("nkc,nc->nk", g, xt @ theta[0].view(g.shape[2], -1).T)  # J theta
                row = {"g": g, "x": xt, "offset": f - shift}
            else:
                j = torch.cat([self._flat(kind, g, xt) for kind, g, xt in parts], dim=2).to(f.dtype)
                row = {"j": j, "offset": f - j @ theta[0]}  # (N, K, P)
            row["y"] = y[:keep]
            self.thetas[i].append(self._theta(spec).cpu())
            self.rows[i].append({k: v.cpu() for k, v in row.items()})

    @torch.no_grad()
    def _configure(self) -> None:
        """The activation configuration on the probe: the sign of every ReLU and LeakyReLU unit."""
        was = self.model.training
        self.model.eval()  # no dropout on the probe: the configuration is of the weights
        try:
            t = trace(self.modules, self.probe)
        finally:
            self.model.train(was)
        bits = torch.cat([p.flatten(1) > 0 for p in t.pre_gate if p is not None], dim=1)
        self.configurations.append(pack_bits(bits).cpu().numpy())
        self.configuration_epochs.append(self.epoch)

    # ------------------------------------------------------------------ results

    def _boxes(self, i: int, unit: int | None, scale: float):
        lo, hi = self.lower[i].cpu().numpy(), self.upper[i].cpu().numpy()
        row = 0 if unit is None else unit
        return iterate_box(lo[row], hi[row], scale)

    def arrays(self) -> dict[str, np.ndarray]:
        """The Taylor optima, in the layout of the book's recorders (``optimum`` ``(S, B, E)``, ...)."""
        if self._solved is not None:
            return self._solved
        if not self.scales:
            raise ParameterError("no Taylor scale is attached (exploration alone): attach with scales=[...]")
        if not self.horizons:
            raise ParameterError("no horizon yet: call epoch_end() at the end of each epoch")
        labels, layers, neurons, optimum, used, mean_loss = [], [], [], [], [], []
        with large_blocks_mapped(), one_host_blas_thread():  # as the book's recorders solve
            for i, spec in enumerate(self.scales):
                units = list(spec.neurons) if spec.neurons is not None else [None]
                values = np.full((len(units), len(self.box_scales), len(self.horizons)), np.nan)
                n_used = np.zeros((len(units), len(self.horizons)))
                loss = np.full((len(units), len(self.horizons)), np.nan)
                if self.loss == "mse":
                    self._solve_mse(i, units, values, n_used, loss)
                else:
                    self._solve_ce(i, units, values, n_used, loss)
                labels += spec.labels()
                layers += [spec.layer or 0] * len(units)
                neurons += [-1 if a is None else a for a in units]
                optimum += list(values)
                used += list(n_used)
                mean_loss += list(loss)
        self._solved = {
            "labels": np.asarray(labels), "layer": np.asarray(layers, dtype=np.int64),
            "neuron": np.asarray(neurons, dtype=np.int64), "box_scales": np.asarray(self.box_scales),
            "horizons": np.asarray(self.horizons, dtype=np.int64),
            "horizon_epoch": np.asarray(self.horizon_epoch, dtype=np.int64),
            "optimum": np.stack(optimum), "samples_used": np.stack(used), "recorded_loss": np.stack(mean_loss),
        }
        return self._solved

    def _solve_mse(self, i: int, units: list[int | None], values, n_used, loss) -> None:
        k = self.outputs
        warm: dict[tuple[int, int], np.ndarray] = {}
        for e, snap in enumerate(self.snapshots[i]):
            count = float(snap["count"][0])
            n_used[:, e], loss[:, e] = count, float(snap["loss"][0]) / (count * k)
            for u in range(len(units)):
                problem = QuadraticProblem(snap["h"][u].cpu().numpy(), snap["g"][u].cpu().numpy(),
                                           float(snap["s"][u]), count * k)
                boxes = [self._boxes(i, None if units[u] is None else u, b) for b in self.box_scales]
                starts = [warm.get((u, b)) for b in range(len(boxes))]
                for b, (solution, value) in enumerate(solve_quadratic_boxes(problem, boxes, starts)):
                    values[u, b, e], warm[(u, b)] = value, solution

    def _solve_ce(self, i: int, units: list[int | None], values, n_used, loss) -> None:
        rows = self.rows[i]
        per_round = rows[0]["y"].shape[0] if rows else 0
        recorded = np.asarray(self.recorded)
        counts = np.array([(recorded < h).sum() for h in self.horizons])
        losses = np.asarray(self.recorded_loss)
        data = {key: torch.cat([r[key] for r in rows]) for key in rows[0]} if rows else {}
        data = {key: v.double() if v.is_floating_point() else v for key, v in data.items()}
        for u in range(len(units)):
            if units[u] is None:  # the whole scale
                pick = data
            else:  # one neuron: its column of the factors or Jacobians, its offsets
                pick = {key: v[:, :, u] if key == "offset" else v[:, :, u : u + 1] if key in ("g", "j") else v
                        for key, v in data.items()}
            iterates = torch.stack([th[0 if units[u] is None else u] for th in self.thetas[i]]).numpy()
            for b, scale in enumerate(self.box_scales):
                box, previous = self._boxes(i, None if units[u] is None else u, scale), None
                for e, c in enumerate(counts):
                    if c == 0:
                        continue
                    d = {key: v[: c * per_round] for key, v in pick.items()}
                    op = dense_operator(d["g"], d["x"]) if "g" in d else jacobian_operator(d["j"].flatten(2))
                    problem = CrossEntropyProblem(d["offset"], d["y"], op)
                    # starts as the book's recorders take them: recorded iterates spread over the
                    # horizon, and the previous horizon's optimum
                    picks = np.unique(np.linspace(0, c - 1, min(6, c)).round().astype(int))
                    starts = [iterates[p] for p in picks] + ([previous] if previous is not None else [])
                    previous, values[u, b, e] = solve_cross_entropy(problem, starts, box, self.tol)
            n_used[u] = counts * per_round
            loss[u] = [losses[:c].mean() if c else np.nan for c in counts]

    def regret_table(self) -> list[dict[str, Any]]:
        """Per scale, box and horizon: cumulative loss, ``N TO(N)``, regret and each over ``sqrt N`` (Theorem 2)."""
        return regret_table(np.asarray(self.round_loss), self.arrays())

    def slopes(self, box_scale: float = 1.0, column: str = "regret_recorded") -> list[dict[str, Any]]:
        """Log-log slope of regret against ``N`` per scale (Theorem 2: about 1/2 or below)."""
        return slopes(self.regret_table(), column, box_scale)

    def exploration(self, seed: int = 0) -> dict[str, Any]:
        """Novelty per epoch, switches per probe input and log-volume per unit (the book's three
        metrics), and their one-number summaries (``summary``)."""
        if len(self.configurations) < 2:
            raise ParameterError("exploration needs a probe (attach(..., probe=x)) and at least one epoch_end()")
        units = sum(_layer_units(self))
        arrays = {"configurations/packed": np.stack(self.configurations),
                  "configurations/epoch_end": np.arange(len(self.configurations)),
                  "configurations/units": np.asarray(units),
                  "configurations/epoch": np.asarray(self.configuration_epochs)}
        metrics = exploration_metrics(arrays, seed=seed)
        return {**metrics, "summary": exploration_summary(metrics)}

    def layer_exploration(self) -> list[dict[str, float]]:
        """Novelty and switches of each activation layer's own configuration (its units alone):
        ``[{"layer": 1, "units", "novelty", "switches"}, ...]``, layers counted from the input,
        novelty the mean over epochs >= 1, switches the mean over probe inputs."""
        if len(self.configurations) < 2:
            raise ParameterError("exploration needs a probe (attach(..., probe=x)) and at least one epoch_end()")
        sizes = _layer_units(self)
        bits = unpack_bits(np.stack(self.configurations), sum(sizes))
        rows, start = [], 0
        for layer, size in enumerate(sizes, start=1):
            packed = pack_bits(bits[..., start : start + size])
            start += size
            rows.append({"layer": layer, "units": size, "novelty": float(np.nanmean(novelty(packed, size)[1:])),
                         "switches": float(np.mean(switches(packed, size)))})
        return rows


def _layer_units(diag: TaylorDiagnostics) -> list[int]:
    """Units of each ReLU or LeakyReLU module, in order (the configuration's layers)."""
    return [p[0].numel() for p in trace(diag.modules, diag.probe[:1]).pre_gate if p is not None]


def _need_epochs(epochs: int | None) -> int:
    if epochs is None or int(epochs) < 1:
        raise ParameterError("a log:K horizon schedule needs epochs= (how many epochs you will train)")
    return int(epochs)


def attach(
    model: nn.Sequential,
    loss: str,
    scales: Sequence[str] = ("network",),
    box_scales: Sequence[float] = (1.0, math.inf),
    stride: int = 1,
    samples: int = 0,
    probe: torch.Tensor | None = None,
    horizons: str = "every",
    epochs: int | None = None,
    max_parameters: int = MAX_PARAMETERS,
    tol: float = 1e-10,
) -> TaylorDiagnostics:
    """Attach the paper's diagnostics to ``model`` (an ``nn.Sequential`` of supported modules).

    Args:
        model: the network; nested ``Sequential``s are allowed, any other container or an
            unsupported module raises :class:`~ntaylor_lib.diagnostics.sequential.UnsupportedModule`.
        loss: ``mse`` (mean over samples and outputs) or ``cross_entropy`` (mean over samples).
        scales: ``network``, ``layer:L``, ``neurons:L`` (every unit of weight layer ``L``, one
            problem each) or ``neurons:L:i,j``; weight layers count from 1. Empty with a
            ``probe``: exploration alone (the configurations, no Taylor recording or regret).
        box_scales: widenings of the iterates' box for the comparator (``inf``: unconstrained).
        stride, samples: cross-entropy only: record every ``stride``-th round, ``samples`` of its
            examples (0: all). Squared error uses every sample of every round.
        probe: inputs on which the activation configuration is taken at each epoch end.
        horizons: ``every`` epoch end, or ``log:K`` (``epochs`` then says how many there will be).
        max_parameters: the largest scale accepted.
        tol: the cross-entropy solver's tolerance.
    """
    return TaylorDiagnostics(model, loss, scales, box_scales, stride, samples, probe, horizons, epochs,
                             max_parameters, tol)


__all__ = ["LOSSES", "MAX_PARAMETERS", "ScaleSpec", "TaylorDiagnostics", "attach", "parse_scale"]
