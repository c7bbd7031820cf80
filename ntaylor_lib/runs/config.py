"""What determines a training run's numbers: its configuration, built from a profile."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .data import TEST_IMAGES, TRAIN_IMAGES, cifar10_missing_message, cifar10_ready
from .profiles import DATASETS, LARGEST_RATE, LARGEST_SEED, OPTIMIZERS, TASKS, ParameterError


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run's numbers (the run store's key).

    ``settings`` holds the optimizer's settings as sorted ``(name, value)`` pairs;
    ``width`` applies to the convnet only; ``train_size`` 0 means the whole training set.
    """

    task: str
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    train_size: int
    eval_size: int
    probe_size: int
    seed: int = 0
    width: int = 0
    dataset: str = "mnist"
    settings: tuple[tuple[str, float], ...] = ()
    device: str = "cpu"

    def __post_init__(self) -> None:
        checks = [
            (self.task in TASKS, f"task={self.task!r} is not one of {', '.join(TASKS)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}"),
            (self.dataset in DATASETS, f"dataset={self.dataset!r} is not one of {', '.join(DATASETS)}"),
            (0 < self.lr <= LARGEST_RATE, f"learning rate {self.lr!r} must be > 0 and at most {LARGEST_RATE:.4g}"),
            (self.epochs >= 1, f"epochs={self.epochs!r} must be >= 1"),
            (self.batch_size >= 1, f"batch_size={self.batch_size!r} must be >= 1"),
            (self.train_size >= 0, "train_size must be >= 0"),
            (self.dataset not in TRAIN_IMAGES or self.train_size <= TRAIN_IMAGES[self.dataset],
             f"train_size={self.train_size} exceeds the {TRAIN_IMAGES.get(self.dataset)} training images of "
             f"{self.dataset}"),
            (1 <= self.eval_size <= TEST_IMAGES, f"eval_size={self.eval_size} must be in 1..{TEST_IMAGES}"),
            (0 <= self.seed <= LARGEST_SEED, f"seed={self.seed} must be in 0..{LARGEST_SEED}"),
            (self.device in ("cpu", "cuda"), f"device={self.device!r} is not one of cpu, cuda"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(message)
        if self.task == "convnet" and self.width < 1:
            raise ParameterError("the convnet needs width >= 1")

    @property
    def rounds_per_epoch(self) -> int:
        """Optimizer steps per epoch: the full minibatches of the training images used (``train_size`` 0: all)."""
        return (self.train_size or TRAIN_IMAGES[self.dataset]) // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["settings"] = dict(self.settings)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        values = dict(values)
        values["settings"] = tuple(sorted(dict(values.get("settings", {})).items()))
        return cls(**values)


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device=cuda was asked for but no CUDA GPU is available; use --set device=cpu")
    return name


def optimizer_settings(params: Mapping[str, Any], optimizer: str) -> tuple[tuple[str, float], ...]:
    """The settings of ``optimizer`` taken from a profile (TensorFlow 1 defaults unless overridden)."""
    keys = {
        "sgd": {"momentum": "sgd_momentum"},
        "rmsprop": {"decay": "rmsprop_decay", "eps": "rmsprop_eps"},
        "adam": {"beta1": "adam_beta1", "beta2": "adam_beta2", "eps": "adam_eps"},
    }[optimizer]
    return tuple(sorted((name, float(params[key])) for name, key in keys.items()))


def run_config(
    params: Mapping[str, Any], task: str, optimizer: str, lr: float, check_data: bool = True
) -> RunConfig:
    """The :class:`RunConfig` of ``task`` and ``optimizer`` at rate ``lr`` under a profile's parameters.

    The rate is explicit here: which rate a paper experiment uses (the profile's, or the
    tuning chapter's pick) is decided by :func:`ntaylor_lib.paper.experiments.experiment_config`.

    Args:
        params: from :func:`ntaylor_lib.runs.profiles.get_profile`.
        lr: the learning rate.
        check_data: fail now (not mid-book) when a CIFAR-10 run lacks CIFAR-10 data.
    """
    if task not in TASKS:
        raise ParameterError(f"task={task!r} is not one of {', '.join(TASKS)}")
    if optimizer not in OPTIMIZERS:
        raise ParameterError(f"optimizer={optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    dataset = params["convnet_dataset"] if task == "convnet" else "mnist"
    if check_data and dataset == "cifar10" and not cifar10_ready():
        raise ParameterError(cifar10_missing_message())
    return RunConfig(
        task=task,
        optimizer=optimizer,
        lr=float(lr),
        epochs=int(params["epochs"]),
        batch_size=int(params[f"batch_{task}"]),
        train_size=int(params["train_size"]),
        eval_size=int(params["eval_size"]),
        probe_size=int(params["probe_size"]),
        seed=int(params["seed"]),
        width=int(params["convnet_width"]) if task == "convnet" else 0,
        dataset=dataset,
        settings=optimizer_settings(params, optimizer),
        device=resolve_device(params["device"]),
    )


def check_resources(params: Mapping[str, Any]) -> None:
    """Fail now, not in the middle of a book, when the profile asks for a GPU that is not there
    or trains the convnet on CIFAR-10 without its data (:class:`ParameterError` naming the fix)."""
    resolve_device(params["device"])
    if "convnet" in params["tasks"] and params["convnet_dataset"] == "cifar10" and not cifar10_ready():
        raise ParameterError(cifar10_missing_message())
