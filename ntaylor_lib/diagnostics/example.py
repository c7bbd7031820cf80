"""A network the paper did not study, for the "Your own network" chapter: what it trains, and at which size.

The chapter shows the diagnostics in a plain training loop; this module holds only what a
reader would otherwise copy from elsewhere: the model, its sizes per profile, and the
optimizer by name.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..runs.optimizers import build_optimizer
from ..runs.profiles import ParameterError

#: Per profile: training images (0: all 60k), epochs, minibatch, cross-entropy recording
#: (every ``stride``-th round, ``samples`` of its examples) and probe inputs.
SETTINGS: dict[str, dict[str, int]] = {
    "smoke": {"train_size": 512, "epochs": 2, "batch_size": 64, "stride": 2, "samples": 8, "probe_size": 128},
    "cpu": {"train_size": 2048, "epochs": 5, "batch_size": 64, "stride": 4, "samples": 16, "probe_size": 256},
    "paper": {"train_size": 0, "epochs": 30, "batch_size": 128, "stride": 47, "samples": 64, "probe_size": 1000},
}
#: The scales: both conv layers whole, four neurons of the first dense layer, the output layer whole.
SCALES = ("layer:1", "layer:2", "neurons:3:0,10,20,31", "layer:4")
#: Default learning rates by optimizer (the chapter's parameter ``lr`` overrides them).
DEFAULT_RATES: dict[str, float] = {"sgd": 0.1, "momentum": 0.03, "nesterov": 0.03, "adagrad": 0.03,
                                   "rmsprop": 1e-3, "adam": 1e-3, "adamw": 1e-3, "signsgd": 1e-3}


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
    """``name`` (one of :data:`DEFAULT_RATES`) at its default rate, or at ``lr`` when given."""
    if name not in DEFAULT_RATES:
        raise ParameterError(f"optimizer={name!r} is not one of {', '.join(DEFAULT_RATES)}")
    return build_optimizer(name, parameters, DEFAULT_RATES[name] if lr is None else lr)


__all__ = ["DEFAULT_RATES", "SCALES", "SETTINGS", "make_optimizer", "settings", "vgg_style_net"]
