"""Per-sample losses ``l(f, y)``, convex and smooth in the network output ``f``.

The incurred loss of a round is the minibatch mean of these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_loss(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``l(f_d, y_d)`` for each sample ``d``.

    Args:
        task: ``autoencoder`` (squared error averaged over the 784 outputs) or
            ``convnet`` (softmax cross-entropy on the logits).
        output: ``(N, K)`` network outputs.
        target: ``(N, K)`` reconstruction targets or ``(N,)`` class labels.

    Returns:
        ``(N,)`` losses.
    """
    if task == "autoencoder":
        return (output - target).pow(2).mean(dim=-1)
    if task == "convnet":
        return F.cross_entropy(output, target, reduction="none")
    raise ValueError(f"unknown task {task!r}; valid: autoencoder, convnet")


def batch_loss(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The minibatch mean of :func:`per_sample_loss`: the incurred loss ``L_n``."""
    if task == "autoencoder":
        return F.mse_loss(output, target)  # the same mean, in one fused kernel
    return per_sample_loss(task, output, target).mean()
