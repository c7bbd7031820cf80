"""What every Taylor recorder shares: scales, the iterates' box, horizons, the solve at the end.

A Taylor recorder attaches to :func:`ntaylor_lib.runs.training.train` through the
:class:`~ntaylor_lib.runs.recorder.Recorder` hooks, tracks the iterates' box
``[min_n theta^n_S, max_n theta^n_S]`` of every scale over every round, marks the horizons
(the round count at the end of every epoch), and, at the end of the last epoch, solves
``TO_S(N)`` at every horizon and every ``box_scale`` (:mod:`ntaylor_lib.taylor.solver`).
The stored arrays (``<name>/optimum`` etc.) turn into the tidy regret table with
:func:`ntaylor_lib.taylor.regret.regret_curves`.

Where rounds are subsampled, ``TO`` is estimated from the recorded rounds only: the
minimum of a subsample's mean is biased low, so the regret is biased high; the arrays
say which rounds were used so the book can state it.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...runs.allocator import large_blocks_mapped
from ...runs.models import ReluNet
from ...runs.profiles import parse_horizon_schedule
from ...runs.progress import progress_bar
from ...runs.recorder import Recorder
from ..jacobians import layer_matrix
from ..solver import iterate_box, one_host_blas_thread


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


def horizon_epochs(schedule: str, epochs: int) -> list[int]:
    """The epochs whose ends are horizons: all of them (``"every"``), or for ``"log:K"`` K epoch ends
    spaced geometrically from the first to the last, both always included, duplicates dropped.

    >>> horizon_epochs("log:4", 100)
    [1, 5, 22, 100]
    """
    count = parse_horizon_schedule(schedule)
    if count is None or count >= epochs:
        return list(range(1, epochs + 1))
    points = np.rint(np.geomspace(1, epochs, max(count, 2))).astype(int).tolist()
    return sorted({1, epochs, *points})


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

    def __init__(self, groups: Sequence[Group], box_scales: Sequence[float] = (1.0,), solve_at_end: bool = True,
                 horizons: str = "every"):
        self.groups = list(groups)
        self.box_scales = [float(b) for b in box_scales]
        self.solve_at_end = solve_at_end
        self.schedule = horizons
        parse_horizon_schedule(horizons)  # a bad schedule fails here, not after training
        self.lower: list[torch.Tensor | None] = [None] * len(self.groups)
        self.upper: list[torch.Tensor | None] = [None] * len(self.groups)
        self.horizons: list[int] = []  # rounds completed at each horizon
        self.horizon_epoch: list[int] = []  # the epoch each horizon ends
        self.rounds = 0
        self.result: dict[str, np.ndarray] = {}
        self.solve_device = torch.device("cpu")  # the run's device, set by setup

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
            "horizons": self.schedule,
        }

    def setup(self, model: ReluNet, data: Any, config: Any) -> None:
        self.epochs = config.epochs
        self.solve_device = torch.device(config.device)
        self.scheduled = set(horizon_epochs(self.schedule, config.epochs))

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
        if epoch not in self.scheduled:  # (epoch 0, before training, never is)
            return
        self.horizons.append(self.rounds)
        self.horizon_epoch.append(epoch)
        self._epoch_done()

    def on_train_end(self, model: ReluNet, status: str) -> None:
        # Also after a divergence: the horizons reached before it still get their optimum.
        if self.solve_at_end and self.horizons:
            self.solve()

    def _epoch_done(self) -> None:
        """Snapshot whatever the horizon needs (called at scheduled horizons only)."""

    def boxes(self, i: int, box_scale: float, neuron: int | None = None):
        lo, hi = self.lower[i].cpu().numpy(), self.upper[i].cpu().numpy()
        if neuron is not None:
            lo, hi = lo[neuron], hi[neuron]
        return iterate_box(lo.ravel(), hi.ravel(), box_scale)

    def _base_state(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper, "horizons": self.horizons, "rounds": self.rounds,
                "horizon_epoch": self.horizon_epoch}

    def _load_base(self, state: dict[str, Any]) -> None:
        self.lower, self.upper = state["lower"], state["upper"]
        self.horizons, self.rounds = list(state["horizons"]), state["rounds"]
        self.horizon_epoch = list(state["horizon_epoch"])

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
            "horizon_epoch": np.asarray(self.horizon_epoch, dtype=np.int64),
            "optimum": np.stack(optimum),  # (S, B, E)
            "samples_used": np.stack(used),  # (S, E): samples (all rounds used) up to each horizon
            "recorded_loss": np.stack(loss),  # (S, E): mean incurred loss over the rounds used
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.result)

    def solve(self, on: str | None = None) -> None:
        """Solve every scale at every horizon and keep the arrays (:meth:`arrays`).

        ``on``: ``"host"`` solves on the CPU; ``"device"`` moves the problems to the run's
        device in float64 (on a CUDA run: the Grams, eigendecompositions and objectives on
        the GPU). ``None``: ``"device"`` when the run trained on CUDA, else ``"host"``.
        Both paths give the same numbers up to rounding, and on a CPU run ``"device"``
        runs the device code on the CPU (which is how the tests compare the two).
        """
        # A solve allocates and frees blocks of hundreds of MB at the paper's scale: mapped, they
        # go back to the system when freed instead of fragmenting the heap (ntaylor_lib.runs.allocator).
        # Its box QPs are mid-sized LAPACK calls, faster on one OpenBLAS thread (one_host_blas_thread).
        with large_blocks_mapped(), one_host_blas_thread():
            self._solve(on)

    def _solve(self, on: str | None) -> None:
        """The recorder's own solve (:meth:`solve` says what ``on`` means)."""
        raise NotImplementedError

    def _solve_target(self, on: str | None) -> tuple[torch.device, bool]:
        """``(device, batched)`` for :meth:`solve`'s ``on``: where the problems go, and whether
        the device path (batched decompositions) is taken."""
        if on is None:
            on = "device" if self.solve_device.type != "cpu" else "host"
        if on not in ("host", "device"):
            raise ValueError(f"on={on!r} must be 'host', 'device' or None")
        return (self.solve_device, True) if on == "device" else (torch.device("cpu"), False)

    def _solve_bar(self, problems: int) -> Any:
        """Progress over the solve's ``problems`` (a scale at a horizon in a box, or in every box at once)."""
        return progress_bar(total=problems, desc=f"solving {self.name} ({len(self.horizons)} horizons)",
                            unit="problem", disable=not sys.stderr.isatty())
