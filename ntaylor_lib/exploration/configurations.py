"""Activation configurations (Definition 2), bit-packed, and their recorder.

For weights ``theta`` and a fixed probe set of ``D`` inputs, the activation
configuration ``A(theta)`` is the ``D x M`` binary matrix whose entry ``(d, m)`` says
whether ReLU unit ``m`` is active (``a_m > 0``) on input ``d``. Every hidden unit of
every hidden layer counts; for a conv layer one unit is one channel at one spatial
position. Units are ordered layer by layer (input layer first) and, inside a layer,
as the pre-activation tensor flattens: ``(C, H, W)`` channel-major for conv layers.

Recorded at ``N`` checkpoints the configurations form the ``N x D x M`` tensor of
section 3.3. It is stored bit-packed along units (``np.packbits``, most significant
bit first, the last byte zero-padded): one bit per entry plus at most 7 padding bits
per probe input and checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
import torch

from ..runs.models import ReluNet
from ..runs.recorder import Recorder

_Bits = TypeVar("_Bits", np.ndarray, torch.Tensor)
_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)  # np.packbits' default (big) bit order


def packed_width(units: int) -> int:
    """Bytes per row of ``units`` packed bits: ``ceil(units / 8)``."""
    return (units + 7) // 8


def pack_bits(bits: _Bits) -> _Bits:
    """Pack a boolean array along its last axis, eight units per byte.

    Args:
        bits: ``(..., M)`` bool (or 0/1) NumPy array or torch tensor.

    Returns:
        ``(..., ceil(M / 8))`` uint8 of the same kind (a torch tensor stays on its
        device); bit ``m`` sits in byte ``m // 8`` at weight ``2^(7 - m % 8)``, exactly
        ``np.packbits(bits, axis=-1)``.
    """
    if isinstance(bits, np.ndarray):
        return np.packbits(bits.astype(bool, copy=False), axis=-1)
    units = bits.shape[-1]
    padded = torch.nn.functional.pad(bits.to(torch.uint8), (0, 8 * packed_width(units) - units))
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=bits.device)
    grouped = padded.view(*bits.shape[:-1], packed_width(units), 8)
    return (grouped * weights).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: np.ndarray | torch.Tensor, units: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``(..., ceil(M / 8))`` uint8 to ``(..., M)`` bool NumPy."""
    if isinstance(packed, torch.Tensor):
        packed = packed.cpu().numpy()
    if packed.shape[-1] != packed_width(units):
        raise ValueError(f"{packed.shape[-1]} bytes per row cannot hold exactly {units} units")
    return np.unpackbits(packed, axis=-1, count=units).astype(bool)


def layer_unit_counts(model: ReluNet, example: torch.Tensor) -> list[int]:
    """ReLU units per hidden layer (input layer first) for inputs shaped like ``example``."""
    with torch.no_grad():
        trace = model.trace(example[:1])
    return [a[0].numel() for a in trace.pre[:-1]]


@torch.no_grad()
def activation_configuration(model: ReluNet, probe_x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The activation configuration ``A(theta)`` of Definition 2.

    Args:
        model: the network at ``theta``.
        probe_x: ``(D, ...)`` the probe inputs.
        chunk: probe inputs per forward pass (bounds memory for wide conv layers).

    Returns:
        ``(D, M)`` bool on ``probe_x``'s device: ``a_m > 0`` for every ReLU unit ``m``,
        ordered layer by layer, each layer flattened from its pre-activation tensor.
    """
    rows = []
    for start in range(0, probe_x.shape[0], chunk):
        masks = model.trace(probe_x[start : start + chunk]).masks()
        rows.append(torch.cat([m.flatten(1) for m in masks], dim=1))
    return torch.cat(rows, dim=0)


@torch.no_grad()
def packed_configuration(model: ReluNet, probe_x: torch.Tensor, chunk: int = 256) -> np.ndarray:
    """:func:`activation_configuration`, packed on its device: ``(D, ceil(M / 8))`` uint8 NumPy."""
    parts = [pack_bits(activation_configuration(model, probe_x[s : s + chunk], chunk)).cpu()
             for s in range(0, probe_x.shape[0], chunk)]
    return torch.cat(parts, dim=0).numpy()


class ConfigurationRecorder(Recorder):
    """Records the probe set's packed activation configuration during training.

    A checkpoint is taken at the end of every epoch (epoch 0 = before training) and,
    with ``round_stride = k > 0``, also before every round ``n`` with ``n % k == 0``
    (``theta^n``; rounds that start an epoch are skipped, being the previous epoch's
    end). Checkpoint ``i`` holds the weights ``theta^{round[i]}`` after ``round[i]`` steps.

    Arrays (stored by the run store as ``configurations/<key>``):
        ``packed`` ``(N, D, ceil(M / 8))`` uint8; ``units`` ``M`` and ``probes`` ``D``
        (0-d int64); ``round`` ``(N,)`` int64; ``epoch`` ``(N,)`` float64 (``round``
        divided by rounds per epoch); ``epoch_end`` ``(N,)`` bool; ``layer_units``
        units per hidden layer.

    Args:
        round_stride: record every ``k`` rounds as well (0: epoch ends only).
        chunk: probe inputs per forward pass.
    """

    name = "configurations"

    def __init__(self, round_stride: int = 0, chunk: int = 256) -> None:
        if round_stride < 0:
            raise ValueError(f"round_stride={round_stride} must be >= 0 (0: epoch ends only)")
        self.round_stride = int(round_stride)
        self.chunk = int(chunk)
        self._records: dict[str, list[Any]] = {"packed": [], "round": [], "epoch_end": []}
        self._resumed = False
        self._probe: torch.Tensor | None = None
        self._layer_units: list[int] = []
        self._rounds_per_epoch = 1

    def spec(self) -> dict[str, Any]:
        return {"round_stride": self.round_stride}

    def setup(self, model, data, config) -> None:
        if not self._resumed:  # a fresh run: forget any earlier run this object saw
            self._records = {key: [] for key in self._records}
        self._resumed = False
        self._probe = data.probe_x
        self._layer_units = layer_unit_counts(model, data.probe_x)
        self._rounds_per_epoch = data.train_x.shape[0] // config.batch_size

    def _record(self, n: int, model: ReluNet, epoch_end: bool) -> None:
        self._records["packed"].append(packed_configuration(model, self._probe, self.chunk))
        self._records["round"].append(n)
        self._records["epoch_end"].append(epoch_end)

    def on_round(self, n, model, x, y) -> None:
        if self.round_stride and n % self.round_stride == 0 and n % self._rounds_per_epoch != 0:
            self._record(n, model, epoch_end=False)

    def on_epoch_end(self, epoch, model) -> None:
        self._record(epoch * self._rounds_per_epoch, model, epoch_end=True)

    def state_dict(self) -> dict[str, Any]:
        # the packed configurations as tensors: checkpoints hold tensors and plain containers only
        return {key: [torch.from_numpy(v) for v in values] if key == "packed" else list(values)
                for key, values in self._records.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._records = {key: [v.numpy() for v in state[key]] if key == "packed" else list(state[key])
                         for key in self._records}
        self._resumed = True

    def arrays(self) -> dict[str, np.ndarray]:
        rounds = np.asarray(self._records["round"], dtype=np.int64)
        units = sum(self._layer_units)
        packed = self._records["packed"]
        return {
            "packed": np.stack(packed) if packed else np.zeros((0, 0, packed_width(units)), np.uint8),
            "units": np.array(units, dtype=np.int64),
            "probes": np.array(packed[0].shape[0] if packed else 0, dtype=np.int64),
            "round": rounds,
            "epoch": rounds / float(self._rounds_per_epoch),
            "epoch_end": np.asarray(self._records["epoch_end"], dtype=bool),
            "layer_units": np.asarray(self._layer_units, dtype=np.int64),
        }


__all__ = [
    "ConfigurationRecorder",
    "activation_configuration",
    "layer_unit_counts",
    "pack_bits",
    "packed_configuration",
    "packed_width",
    "unpack_bits",
]
