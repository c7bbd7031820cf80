"""A network the paper did not study, for the "Your own network" chapter: what it trains, and at which size.

The chapter shows the diagnostics in a plain training loop; this module holds only what a
reader would otherwise copy from elsewhere: the model, its sizes per profile, and the
optimizer by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..runs.profiles import ParameterError

#: Per profile: training images (0: all 60k), epochs, minibatch, cross-entropy recording
#: (every ``stride``-th round, ``samples`` of its examples) and probe inputs.
SETTINGS: dict[str, dict[str, int]] = {
    "smoke": {"train_size": 512, "epochs": 2, "batch_size": 64, "stride": 2, "samples": 8, "probe_size": 128},
    "cpu": {"train_size": 4096, "epochs": 5, "batch_size": 64, "stride": 4, "samples": 16, "probe_size": 256},
    "paper": {"train_size": 0, "epochs": 30, "batch_size": 128, "stride": 47, "samples": 64, "probe_size": 1000},
}
#: The scales: both conv layers whole, four neurons of the first dense layer, the output layer whole.
SCALES = ("layer:1", "layer:2", "neurons:3:0,10,20,31", "layer:4")
#: Default learning rates by optimizer (the chapter's parameter ``lr`` overrides them).
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.1}),
    "momentum": (torch.optim.SGD, {"lr": 0.03, "momentum": 0.9}),
    "nesterov": (torch.optim.SGD, {"lr": 0.03, "momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.03}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3}),
    "adam": (torch.optim.Adam, {"lr": 1e-3}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01}),
}


def vgg_style_net(width: int = 8, classes: int = 10) -> nn.Sequential:
    """A small all-convolutional MNIST classifier unlike the paper's convnet: strided 3x3
    convolutions instead of max-pooling, LeakyReLU, average pooling and dropout before the
    dense layers. Weight layers: 1 and 2 convolutional, 3 and 4 dense."""
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, width, 3, stride=2, padding=1), nn.LeakyReLU(0.05)),  # 14 x 14
        nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.05)),  # 7 x 7
        nn.AvgPool2d(2),  # 3 x 3
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(2 * width * 9, 32),
        nn.ReLU(),
        nn.Linear(32, classes),
    )


def settings(profile: str) -> dict[str, int]:
    if profile not in SETTINGS:
        raise ParameterError(f"profile={profile!r} is not one of {', '.join(SETTINGS)}")
    return dict(SETTINGS[profile])


def make_optimizer(name: str, parameters: Iterable[torch.nn.Parameter],
                   lr: float | None = None) -> torch.optim.Optimizer:
    """``name`` (one of :data:`OPTIMIZERS`) with its default settings, ``lr`` replacing the rate when given."""
    if name not in OPTIMIZERS:
        raise ParameterError(f"optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}")
    kind, kwargs = OPTIMIZERS[name]
    if lr is not None:
        if not (isinstance(lr, (int, float)) and 0 < lr < float("inf")):
            raise ParameterError(f"lr={lr!r} must be a finite number > 0")
        kwargs = {**kwargs, "lr": float(lr)}
    return kind(parameters, **kwargs)


__all__ = ["OPTIMIZERS", "SCALES", "SETTINGS", "make_optimizer", "settings", "vgg_style_net"]
