"""Observation 3 and section 3.2: how close an optimizer's steps are to the signed gradient.

Observation 3: for a gradient ``g`` without zero coordinates,
``sign(g) = argmax_{||x||_inf <= 1} <g, x>``, since ``<g, x> = sum_i g_i x_i <= sum_i |g_i|``
with equality only at ``x_i = sign(g_i)``. RMS-normalised optimizers approximate the
signed gradient (Hypothesis 1); :class:`SignedGradientRecorder` measures along a real
run how close each step ``theta^{n+1} - theta^n`` is to ``-sign(g_n)`` and to ``-g_n``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, grad

from ..runs.losses import batch_loss
from ..runs.recorder import Recorder


def signed_gradient(g: torch.Tensor) -> torch.Tensor:
    """``sign(g)``: the maximiser of ``<g, x>`` over the unit infinity-ball (Observation 3)."""
    return torch.sign(g)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flat tensors, computed in float64; NaN when either is zero."""
    a, b = a.double().flatten(), b.double().flatten()
    norms = float(a.norm() * b.norm())
    return float(a @ b) / norms if norms > 0 else math.nan


def step_cosines(step: torch.Tensor, g: torch.Tensor) -> dict[str, float]:
    """How a step relates to the gradient ``g`` it was taken from.

    Returns:
        ``sign``: ``cos(step, -sign(g))``; ``grad``: ``cos(step, -g)``; ``agreement``:
        the fraction of coordinates with ``g != 0`` where the step moves against ``g``'s sign.
    """
    nonzero = g != 0
    agree = (torch.sign(step) == -torch.sign(g)) & nonzero
    count = int(nonzero.sum())
    return {
        "sign": cosine(step, -signed_gradient(g)),
        "grad": cosine(step, -g),
        "agreement": float(agree.sum()) / count if count else math.nan,
    }


def inf_ball_check(g: torch.Tensor, samples: int = 10000, seed: int = 0) -> dict[str, float]:
    """Observation 3 numerically: ``<g, x>`` at ``sign(g)`` against other points of the unit infinity-ball.

    Returns:
        ``signed``: ``<g, sign(g)>``; ``l1``: ``||g||_1`` (the bound it attains);
        ``best_vertex`` and ``best_uniform``: the largest ``<g, x>`` over ``samples``
        random vertices (``x_i = +-1``) and uniform points of the ball; ``scaled_gradient``:
        ``<g, g / ||g||_inf>``, the gradient direction scaled into the ball.
    """
    g = g.double().flatten()
    generator = torch.Generator().manual_seed(seed)
    vertices = torch.randint(0, 2, (samples, g.numel()), generator=generator, dtype=torch.float64) * 2 - 1
    uniform = torch.rand((samples, g.numel()), generator=generator, dtype=torch.float64) * 2 - 1
    return {
        "signed": float(g @ signed_gradient(g)),
        "l1": float(g.abs().sum()),
        "best_vertex": float((vertices @ g).max()),
        "best_uniform": float((uniform @ g).max()),
        "scaled_gradient": float(g @ (g / g.abs().max())),
    }


def _layer_of(name: str) -> int:
    match = re.match(r"layers\.(\d+)\.", name)
    return int(match.group(1)) if match else -1


class SignedGradientRecorder(Recorder):
    """Every ``round_stride``-th round ``n``, compares the optimizer's step with ``-sign(g_n)`` and ``-g_n``.

    ``g_n`` is the minibatch gradient at ``theta^n`` on round ``n``'s minibatch,
    computed with ``torch.func.grad`` on detached weights (training's ``.grad``
    buffers and random streams are untouched); the step ``theta^{n+1} - theta^n`` is
    read at the next round, or at the epoch's end after its last round.

    Arrays (``signed_gradient/<key>``): ``round`` ``(K,)``; ``cos_sign``, ``cos_grad``,
    ``agreement`` ``(K,)`` over all weights (see :func:`step_cosines`); ``layer_cos_sign``,
    ``layer_cos_grad`` ``(K, L)`` per weight layer (its weights and biases).

    Args:
        round_stride: record rounds ``n`` with ``n % round_stride == 0``.
    """

    name = "signed_gradient"
    _KEYS = ("round", "cos_sign", "cos_grad", "agreement", "layer_cos_sign", "layer_cos_grad")

    def __init__(self, round_stride: int = 10) -> None:
        if round_stride < 1:
            raise ValueError(f"round_stride={round_stride} must be >= 1")
        self.round_stride = int(round_stride)
        self._records: dict[str, list[Any]] = {key: [] for key in self._KEYS}
        self._resumed = False
        self._pending: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self._task = ""
        self._layers: list[int] = []

    def spec(self) -> dict[str, Any]:
        return {"round_stride": self.round_stride}

    def setup(self, model, data, config) -> None:
        if not self._resumed:
            self._records = {key: [] for key in self._KEYS}
        self._resumed = False
        self._pending = None
        self._task = config.task
        self._layers = [_layer_of(name) for name, _ in model.named_parameters()]

    @staticmethod
    def _flat(tensors) -> torch.Tensor:
        return torch.cat([t.detach().flatten() for t in tensors])

    def _finish(self, model) -> None:
        n, before, g = self._pending
        self._pending = None
        step = self._flat(model.parameters()) - before
        sizes = [p.numel() for p in model.parameters()]
        summary = step_cosines(step, g)
        per_layer = {layer: ([], []) for layer in sorted(set(self._layers))}
        for layer, s, gp in zip(self._layers, step.split(sizes), g.split(sizes)):
            per_layer[layer][0].append(s)
            per_layer[layer][1].append(gp)
        layer_cos = [step_cosines(torch.cat(s), torch.cat(gp)) for s, gp in per_layer.values()]
        self._records["round"].append(n)
        self._records["cos_sign"].append(summary["sign"])
        self._records["cos_grad"].append(summary["grad"])
        self._records["agreement"].append(summary["agreement"])
        self._records["layer_cos_sign"].append([c["sign"] for c in layer_cos])
        self._records["layer_cos_grad"].append([c["grad"] for c in layer_cos])

    def on_round(self, n, model, x, y) -> None:
        if self._pending is not None:
            self._finish(model)
        if n % self.round_stride:
            return
        params = {name: p.detach() for name, p in model.named_parameters()}
        task = self._task
        g = grad(lambda p: batch_loss(task, functional_call(model, p, (x,)), y))(params)
        self._pending = (n, self._flat(params.values()).clone(), self._flat(g.values()))

    def on_epoch_end(self, epoch, model) -> None:
        if self._pending is not None:
            self._finish(model)

    def state_dict(self) -> dict[str, Any]:
        return {key: list(values) for key, values in self._records.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._records = {key: list(state[key]) for key in self._KEYS}
        self._resumed = True

    def arrays(self) -> dict[str, np.ndarray]:
        count, layers = len(self._records["round"]), len(set(self._layers))
        out = {key: np.asarray(self._records[key], dtype=np.float64) for key in self._KEYS[1:4]}
        out.update({key: np.asarray(self._records[key], dtype=np.float64).reshape(count, layers)
                    for key in self._KEYS[4:]})
        out["round"] = np.asarray(self._records["round"], dtype=np.int64)
        return out


__all__ = ["SignedGradientRecorder", "cosine", "inf_ball_check", "signed_gradient", "step_cosines"]
