"""Optimizers by name, the paper's three and those it did not run, with their settings checked.

The paper trains with SGD, RMSProp and Adam. Its open questions ask about others: momentum
(Nesterov's too), Adagrad (whose convex regret bound Theorem 2 borrows), AdamW, signSGD (the
limit Observation 3 describes: steps along ``sign(g)``) and SGD with annealed Gaussian
gradient noise (Neelakantan et al., 2016, "Adding gradient noise improves learning for very
deep networks": ``g + N(0, eta / (1 + t)^0.55)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .profiles import LARGEST_RATE, ParameterError

#: Neelakantan et al.'s annealing exponent: the noise variance at step t is eta / (1 + t)^gamma.
NOISE_GAMMA = 0.55


class SignSGD(torch.optim.Optimizer):
    """``theta <- theta - lr sign(g)``: every coordinate moves by exactly ``lr`` (Observation 3's limit)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad), alpha=-group["lr"])
        return loss


class NoisySGD(torch.optim.Optimizer):
    """SGD on ``g + N(0, sigma_t^2)``, ``sigma_t^2 = eta / (1 + t)^0.55`` (annealed Gaussian gradient noise).

    The noise comes from its own generator seeded with ``seed``, so a run is reproducible and
    the noise does not shift the random numbers of anything else.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, eta: float, seed: int = 0) -> None:
        super().__init__(params, {"lr": lr, "eta": eta})
        self.t = 0
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            sigma = math.sqrt(group["eta"] / (1 + self.t) ** NOISE_GAMMA)
            for p in group["params"]:
                if p.grad is not None:
                    noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)
                    p.add_(p.grad + sigma * noise, alpha=-group["lr"])
        self.t += 1
        return loss


#: Name -> (optimizer class, fixed settings). RMSProp carries the book's decay and epsilon.
OPTIMIZER_CLASSES: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {"alpha": 0.9, "eps": 1e-10}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {"weight_decay": 0.01}),
    "signsgd": (SignSGD, {}),
}


def build_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], lr: float, noise: float = 0.0,
                    seed: int = 0) -> torch.optim.Optimizer:
    """The optimizer ``name`` at rate ``lr``; ``noise`` > 0 (SGD only) adds annealed Gaussian gradient noise.

    Raises:
        ParameterError: for an unknown name, a rate that is not finite and > 0 (or above the
            largest float32), a negative or non-finite ``noise``, or noise on another optimizer.
    """
    if name not in OPTIMIZER_CLASSES:
        raise ParameterError(f"optimizer={name!r} is not one of {', '.join(OPTIMIZER_CLASSES)}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr <= LARGEST_RATE):
        raise ParameterError(f"lr={lr!r} must be a finite number > 0 (at most {LARGEST_RATE:g})")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (0 <= noise < math.inf):
        raise ParameterError(f"noise={noise!r} must be a finite number >= 0")
    if noise and name != "sgd":
        raise ParameterError(f"noise={noise!r} is for sgd only (annealed gradient noise), not {name}")
    if noise:
        return NoisySGD(parameters, float(lr), float(noise), seed)
    kind, settings = OPTIMIZER_CLASSES[name]
    return kind(parameters, lr=float(lr), **settings)


__all__ = ["NOISE_GAMMA", "OPTIMIZER_CLASSES", "NoisySGD", "SignSGD", "build_optimizer"]
