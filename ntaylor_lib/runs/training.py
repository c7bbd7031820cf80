"""Training runs with per-round records and hooks for recorders.

One round ``n`` is one optimizer step: recorders see the weights ``theta^n`` *before*
the step, the minibatch ``B_n`` and ``n``; the loop records the incurred loss ``L_n``.
At the end of each epoch the loop evaluates loss (and accuracy for the classifier)
on fixed subsets, calls the recorders, and hands a resumable checkpoint to its caller.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .config import RunConfig
from .data import TaskData, task_data
from .losses import batch_loss, per_sample_loss
from .models import ReluNet, Trace, build_model
from .profiles import ParameterError
from .progress import progress_bar
from .recorder import Recorder


def make_optimizer(config: RunConfig, parameters: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD, RMSProp or Adam with the run's settings.

    RMSProp: ``v <- decay v + (1 - decay) g^2``, ``theta <- theta - lr g / (sqrt(v) + eps)``.
    Adam: Kingma and Ba's update with ``beta1, beta2, eps``. TensorFlow 1 puts RMSProp's
    epsilon inside the square root and starts ``v`` at 1; PyTorch's (used here) puts it
    outside and starts ``v`` at 0.
    """
    s = dict(config.settings)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=s.get("momentum", 0.0))
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=config.lr, alpha=s.get("decay", 0.9), eps=s.get("eps", 1e-10))
    return torch.optim.Adam(
        parameters, lr=config.lr, betas=(s.get("beta1", 0.9), s.get("beta2", 0.999)), eps=s.get("eps", 1e-8)
    )


@dataclass
class History:
    """Per-round incurred losses and per-epoch evaluations (index 0: before training)."""

    round_loss: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"round_loss": np.asarray(self.round_loss, dtype=np.float64),
               "epoch_time": np.asarray(self.epoch_time, dtype=np.float64)}
        out.update({f"epoch_{k}": np.asarray(v, dtype=np.float64) for k, v in self.evals.items()})
        return out


@torch.no_grad()
def evaluate(task: str, model: ReluNet, x: torch.Tensor, y: torch.Tensor, chunk: int = 1000) -> dict[str, float]:
    """Mean loss (and accuracy for the classifier) of ``model`` on ``(x, y)``."""
    total, correct = 0.0, 0
    for start in range(0, x.shape[0], chunk):
        out = model(x[start : start + chunk])
        target = y[start : start + chunk]
        total += per_sample_loss(task, out, target).sum().item()
        if task == "convnet":
            correct += (out.argmax(1) == target).sum().item()
    result = {"loss": total / x.shape[0]}
    if task == "convnet":
        result["accuracy"] = correct / x.shape[0]
    return result


@dataclass
class TrainResult:
    model: ReluNet
    history: History
    status: str  # "complete" or "diverged"
    wall_time: float


def _record_evals(history: History, config: RunConfig, model: ReluNet, data: TaskData) -> None:
    for prefix, (x, y) in (("train", (data.eval_train_x, data.eval_train_y)), ("test", (data.test_x, data.test_y))):
        for name, value in evaluate(config.task, model, x, y).items():
            history.evals.setdefault(f"{prefix}_{name}", []).append(value)


def training_step(task: str, model: ReluNet, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  n: int = 0, tracers: Sequence[Recorder] = ()) -> torch.Tensor:
    """One round: the incurred loss ``L_n`` on ``(x, y)``, its backward pass and the step.

    With ``tracers`` (recorders with :attr:`Recorder.uses_trace`) the forward pass is
    :meth:`ReluNet.trace`, the same operations with what they saw kept, and each tracer's
    :meth:`Recorder.on_backward` gets it and the pre-activations' gradients before the step.
    Returns ``L_n`` (detached).
    """
    if tracers:
        trace = model.trace(x)
        for a in trace.pre:
            a.retain_grad()
        output = trace.output
    else:
        output = model(x)
    loss = batch_loss(task, output, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if tracers:
        seen = Trace([t.detach() for t in trace.inputs], [a.detach() for a in trace.pre], trace.pool_indices)
        grads = [a.grad for a in trace.pre]
        for recorder in tracers:
            recorder.on_backward(n, seen, grads, y, loss.detach())
    optimizer.step()
    return loss.detach()


@contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Float32 results below ``1.2e-38`` (subnormal numbers) taken as zero on the CPU while it holds.

    RMSProp's and Adam's second moments ``v`` average squared gradients, and a gradient
    below about ``1e-19`` squares to a subnormal number, which the CPU computes with many
    times the cycles of a normal one. They accumulate over training: the paper profile's
    100-epoch Adam run on the autoencoder trained in 395 s flushed against 593 s kept, with
    the same final loss to every digit (``benchmarks/README.md``). Flushed, the numbers they
    feed are unchanged to the digits that reach a loss (an update divides by
    ``sqrt(v) + eps``, with ``eps`` far above them). Yields whether the CPU supports it
    (x86 with SSE3); PyTorch's default, off, is restored afterwards.
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(False)


def train(
    config: RunConfig,
    recorders: Sequence[Recorder] = (),
    data: TaskData | None = None,
    progress: bool | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    """Train one configuration, calling ``recorders`` at every round and epoch.

    Args:
        config: the run.
        recorders: hooks, see :class:`Recorder`.
        data: the task's tensors (loaded from ``config`` when omitted).
        progress: show a tqdm bar (default: when stderr is a terminal).
        checkpoint: called at the end of every epoch with a state from which
            ``resume`` continues to exactly the numbers of an uninterrupted run.
        resume: such a state.

    Returns:
        The trained model and its :class:`History`; ``status`` is ``diverged`` when the
        loss became NaN or infinite (the history then stops at the last finite round).
        Subnormal float32 numbers are flushed to zero throughout (:func:`denormals_flushed`).
    """
    with denormals_flushed():
        return _train(config, recorders, data, progress, checkpoint, resume)


def _train(config, recorders, data, progress, checkpoint, resume) -> TrainResult:
    device = torch.device(config.device)
    if data is None:
        data = task_data(config.task, config.dataset, config.train_size, config.eval_size, config.probe_size, device)
    n_train = data.train_x.shape[0]
    rounds_per_epoch = n_train // config.batch_size  # full minibatches only: every L_n averages B samples
    if rounds_per_epoch < 1:
        raise ParameterError(f"batch_size={config.batch_size} exceeds the {n_train} training samples")

    torch.manual_seed(config.seed)
    model = build_model(config.task, config.dataset, config.width).to(device)
    optimizer = make_optimizer(config, list(model.parameters()))
    shuffle = torch.Generator().manual_seed(config.seed)
    history, start_epoch, wall = History(), 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        shuffle.set_state(resume["shuffle"])
        history = History(**resume["history"])
        start_epoch, wall = resume["epoch"], resume["wall_time"]
        for recorder, state in zip(recorders, resume["recorders"]):
            recorder.load_state_dict(state)
    for recorder in recorders:
        recorder.setup(model, data, config)
    if resume is None:
        model.eval()
        _record_evals(history, config, model, data)
        for recorder in recorders:
            recorder.on_epoch_end(0, model)

    if progress is None:
        progress = sys.stderr.isatty()
    bar = progress_bar(
        total=config.epochs * rounds_per_epoch,
        initial=start_epoch * rounds_per_epoch,
        disable=not progress,
        desc=f"{config.task}/{config.optimizer} lr={config.lr:g}, {config.epochs} epochs",
        unit="round",
        mininterval=0.5,
    )
    losses = torch.empty(rounds_per_epoch, device=device)
    tracers = [r for r in recorders if r.uses_trace]
    status = "complete"
    for epoch in range(start_epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=shuffle)[: rounds_per_epoch * config.batch_size]
        order = order.view(rounds_per_epoch, config.batch_size).to(device)
        base = (epoch - 1) * rounds_per_epoch
        for i in range(rounds_per_epoch):
            x, y = data.train_x[order[i]], data.train_y[order[i]]
            for recorder in recorders:
                recorder.on_batch(base + i, order[i])
                recorder.on_round(base + i, model, x, y)
            losses[i] = training_step(config.task, model, optimizer, x, y, base + i, tracers)
            bar.update(1)
        epoch_losses = losses.cpu().numpy().astype(np.float64)
        finite = np.isfinite(epoch_losses)
        if not finite.all():
            history.round_loss.extend(epoch_losses[: int(np.argmin(finite))].tolist())
            status = "diverged"
            break
        history.round_loss.extend(epoch_losses.tolist())
        model.eval()
        _record_evals(history, config, model, data)
        for recorder in recorders:
            recorder.on_epoch_end(epoch, model)
        history.epoch_time.append(time.perf_counter() - started)
        wall += history.epoch_time[-1]
        if checkpoint is not None:
            checkpoint(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "shuffle": shuffle.get_state(),
                    "history": asdict(history),  # plain containers: checkpoints load with weights_only
                    "wall_time": wall,
                    "recorders": [r.state_dict() for r in recorders],
                }
            )
    bar.close()
    for recorder in recorders:
        recorder.on_train_end(model, status)
    return TrainResult(model=model, history=history, status=status, wall_time=wall)
