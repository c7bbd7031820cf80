"""The recorder contract: what plugs into the training loop (:func:`ntaylor_lib.runs.training.train`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import RunConfig
from .data import TaskData
from .models import ReluNet, Trace


class Recorder:
    """Base class of what plugs into the training loop; every hook is optional.

    A recorder's :meth:`spec` is part of the run store's key, its :meth:`arrays` are
    stored with the run, and :meth:`state_dict` travels in checkpoints so that an
    interrupted run resumes with its recorders intact.
    """

    name = "recorder"
    #: When true, the loop runs its forward pass as :meth:`ReluNet.trace`, keeps the gradients
    #: of the incurred loss by the pre-activations, and hands both to :meth:`on_backward`: the
    #: per-sample quantities a recorder would otherwise recompute (the structure Opacus and
    #: BackPACK use: layer inputs and backpropagated errors). The step itself is unchanged.
    uses_trace = False

    def spec(self) -> dict[str, Any]:
        return {}

    def setup(self, model: ReluNet, data: TaskData, config: RunConfig) -> None:
        """Called once before the first round (and again after a resume)."""

    def on_batch(self, n: int, index: torch.Tensor) -> None:
        """Round ``n``'s minibatch as indices into the training set (called just before :meth:`on_round`)."""

    def on_round(self, n: int, model: ReluNet, x: torch.Tensor, y: torch.Tensor) -> None:
        """Round ``n`` (from 0): ``model`` holds ``theta^n``, before the step on minibatch ``(x, y)``."""

    def on_backward(self, n: int, trace: Trace, grads: list[torch.Tensor], y: torch.Tensor,
                    loss: torch.Tensor) -> None:
        """Round ``n`` after the backward pass, before the step (the model still holds ``theta^n``):
        the forward ``trace`` on the minibatch (detached), ``grads[l - 1]``, the gradient of
        ``L_n`` by the pre-activation ``a_l``, the targets ``y`` and ``L_n`` itself (detached).
        Called only when :attr:`uses_trace` is set."""

    def on_epoch_end(self, epoch: int, model: ReluNet) -> None:
        """After the last step of ``epoch`` (from 1); also called with 0 before training."""

    def on_train_end(self, model: ReluNet, status: str) -> None:
        """After the last epoch, or after the epoch in which the loss diverged (``status``)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def arrays(self) -> dict[str, np.ndarray]:
        return {}
