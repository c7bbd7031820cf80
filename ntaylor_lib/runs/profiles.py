"""Run profiles: one parameter set per scale, chosen by name, overridable per key.

``smoke`` runs every chapter in seconds (tests and CI); ``cpu`` is the default and
builds the whole book on a 2-core machine without a GPU; ``paper`` is the paper's
scale (full data, 100 epochs, CIFAR-10 convnet) for one CUDA GPU.

:func:`get_profile` parses and checks a profile once into a :class:`Profile`: a read-only
mapping of typed values (numbers are numbers, lists are tuples), with the profile's
name and the overrides that made it kept apart. Every value is validated before any
training starts, and every error lists the valid choices, so a typo in ``--set`` never
costs a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from .data import TEST_IMAGES, TRAIN_IMAGES

TASKS = ("autoencoder", "convnet")
OPTIMIZERS = ("sgd", "rmsprop", "adam")
DATASETS = ("mnist", "cifar10")
DEVICES = ("auto", "cpu", "cuda")
LR_SOURCES = ("fixed", "tuned")
#: The parameters are float32: a larger learning rate overflows the step itself.
LARGEST_RATE = 3.4028234663852886e38
#: Seeds are C long longs in torch's generators.
LARGEST_SEED = 2**63 - 1


class ParameterError(ValueError):
    """A profile name, parameter name or value that cannot be used."""


def _learning_rates(ae: tuple[float, float, float], cn: tuple[float, float, float]) -> dict[str, float]:
    """Flatten per-task learning rates, ordered (sgd, rmsprop, adam), into ``lr_<task>_<optimizer>`` keys."""
    out: dict[str, float] = {}
    for task, rates in (("autoencoder", ae), ("convnet", cn)):
        for opt, rate in zip(OPTIMIZERS, rates):
            out[f"lr_{task}_{opt}"] = rate
    return out


# Shared by every profile. Optimizer settings are TensorFlow 1's defaults, which the
# paper used (the design page, "How this book computes"); PyTorch places RMSProp's and Adam's epsilon
# outside the square root, which at these sizes changes nothing measurable.
_COMMON: dict[str, Any] = {
    # The tasks a build runs: both, or one of them (a chapter that needs only the other then
    # says it was not run at this setting).
    "tasks": TASKS,
    "seed": 0,
    "device": "auto",
    "batch_autoencoder": 64,
    "batch_convnet": 128,
    "rmsprop_decay": 0.9,
    "rmsprop_eps": 1e-10,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_eps": 1e-8,
    "sgd_momentum": 0.0,
    # Figure 5 runs SGD at these three rates besides the tuned optimizers.
    "exploration_sgd_rates": (1.0, 0.1, 0.01),
    # Figure 1: random deep ReLU nets on a 1-D input.
    "shatter_width": 20,
    "shatter_depth": 10,
    "shatter_points": 4001,
    # Activation configurations and exploration (Figure 5, Observation 3).
    "config_round_stride": 0,  # also record configurations every k rounds (0: epoch ends only)
    "volume_values": 50,  # singular values per unit in the log-volume (the paper's 50)
    "volume_floor": 1e-3,  # singular values below this count as this in the log-volume
    "volume_units": 0,  # units whose log-volume is computed, drawn by seed (0: all)
    "sign_round_stride": 10,  # compare the step with the signed gradient every k rounds
    # Taylor recorders (ntaylor_lib.paper.experiments.taylor_recorders): which scales, how often, which boxes.
    "taylor_ae_layer": 3,
    "taylor_neurons": 50,
    "taylor_input_neurons": 10,
    "taylor_input_stride": 10,
    "taylor_conv_neurons": 8,
    "taylor_round_stride": 20,
    "taylor_samples": 32,
    "taylor_box_scales": (1.0, 2.0, 4.0, math.inf),
    "taylor_box_scales_ce": (1.0,),
    # Horizons at which the Taylor optima are solved: "every" epoch end, or "log:K", K epoch
    # ends spaced geometrically from the first to the last (what a log-log slope wants).
    "taylor_horizons": "every",
    # L-BFGS stopping tolerance of the cross-entropy optimum (relative decrease per step).
    "taylor_ce_tol": 1e-10,
    # Whole convnet layers replayed from weight snapshots (ntaylor_lib.taylor.recorders.ce_replay): which
    # layers (empty for none), every how many rounds, how many examples of each minibatch,
    # and the L-BFGS iterations per horizon.
    "taylor_replay_layers": (2, 3),
    "taylor_replay_stride": 50,
    "taylor_replay_samples": 32,
    "taylor_replay_iter": 200,
    # Learning rates: hand-picked for these models. With lr_source "tuned" the runs use
    # instead the rates that the tuning chapter (book/lr_tuning.md, ntaylor_lib.paper.tuning)
    # picked and stored; an lr_<task>_<optimizer> given with --set still wins.
    **_learning_rates(ae=(0.05, 1e-3, 1e-3), cn=(0.05, 1e-3, 1e-3)),
    "lr_source": "tuned",  # "fixed": the lr_* keys above; "tuned": the tuning chapter's picks
    # Learning-rate tuning: candidate rates per optimizer (shared by both tasks), each
    # trained for tuning_epochs epochs on tuning_train_size images (0: all); the rate with
    # the lowest final training loss wins (ntaylor_lib.paper.tuning).
    # cpu: the hand-picked rate and two above it; a first sweep from a fifth of the hand-picked
    # rates up picked the largest rate for every task and optimizer after 3 epochs.
    "tuning_epochs": 3,
    "tuning_train_size": 6400,
    "tuning_rates_sgd": (0.05, 0.2, 0.8),
    "tuning_rates_rmsprop": (0.001, 0.003, 0.01),
    "tuning_rates_adam": (0.001, 0.003, 0.01),
}

_PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        **_COMMON,
        "epochs": 2,
        "train_size": 1024,
        "eval_size": 256,
        "probe_size": 64,
        "convnet_width": 8,
        "convnet_dataset": "mnist",
        "shatter_points": 1001,
        "shatter_depth": 6,
        "taylor_neurons": 4,
        "taylor_input_neurons": 2,
        "taylor_input_stride": 4,
        "taylor_conv_neurons": 2,
        "taylor_round_stride": 4,
        "taylor_samples": 16,
        "taylor_replay_stride": 4,
        "taylor_replay_samples": 8,
        "taylor_replay_iter": 50,
        "taylor_box_scales": (1.0, math.inf),
        "volume_units": 64,
        "sign_round_stride": 4,
        # Tests stay fast and independent of any tuning: fixed rates, a tiny sweep.
        "lr_source": "fixed",
        "tuning_epochs": 1,
        "tuning_train_size": 512,
        "tuning_rates_sgd": (0.01, 0.05),
        "tuning_rates_rmsprop": (0.001,),
        "tuning_rates_adam": (0.001,),
    },
    "cpu": {
        **_COMMON,
        "epochs": 10,
        "train_size": 12800,
        "eval_size": 2000,
        "probe_size": 500,
        "convnet_width": 16,
        "convnet_dataset": "mnist",
        # Fewer tracked neurons than the paper's 50: the cross-entropy optimum is an
        # L-BFGS solve per neuron per horizon, and the book must build in 30 minutes.
        "taylor_neurons": 10,
        "taylor_input_neurons": 2,
        "taylor_conv_neurons": 4,
        # The iterates' box and no box (a pseudo-inverse); x2 and x4 (each a box QP per
        # scale per horizon) are left to the paper profile.
        "taylor_box_scales": (1.0, math.inf),
        # Optima to about 1e-7 relative: far below what the charts and slopes resolve.
        "taylor_ce_tol": 1e-7,
        # Cross-entropy factors on every 25th round, 16 samples each (40 rounds, 640 samples
        # by the last horizon): the L-BFGS solves scale with what is kept.
        "taylor_round_stride": 25,
        "taylor_samples": 16,
        # Whole conv layers 2 and 3 from snapshots of every 50th round, 16 examples each
        # (20 rounds, 320 examples by the last horizon): each L-BFGS step replays them all.
        "taylor_replay_stride": 50,
        "taylor_replay_samples": 16,
        "taylor_replay_iter": 100,
    },
    "paper": {
        **_COMMON,
        "epochs": 100,
        "train_size": 0,  # 0 = the whole training set
        "eval_size": 10000,
        "probe_size": 1000,
        "convnet_width": 64,
        "convnet_dataset": "cifar10",
        "device": "cuda",
        "taylor_input_neurons": 50,
        "taylor_conv_neurons": 50,
        # A conv neuron's per-sample factors are K x Q = 10 x 1601 numbers: 50 neurons of
        # conv layers 2 and 3 on 8 samples of one round per epoch (390 rounds) keep about
        # 51 MB per recorded round, 5 GB of host memory over 100 epochs (128 samples on
        # every 50th round would need about 650 GB).
        "taylor_round_stride": 390,
        "taylor_samples": 8,
        "taylor_box_scales_ce": (1.0, 2.0, 4.0, math.inf),
        "taylor_box_scales": (1.0, 2.0, 4.0, math.inf),
        # 12 horizons over 100 epochs: a cross-entropy horizon solves over every recorded
        # sample up to it, so 100 of them would cost about 5050 first-horizon solves
        "taylor_horizons": "log:12",
        # 100 epochs of 390 rounds: a snapshot every 200th (195 rounds of 64 examples).
        "taylor_replay_stride": 200,
        "taylor_replay_samples": 64,
        "sign_round_stride": 50,
        # Half-decade grids around the hand-picked rates, 10 epochs on the whole training set.
        "tuning_epochs": 10,
        "tuning_train_size": 0,
        "tuning_rates_sgd": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
        "tuning_rates_rmsprop": (0.0001, 0.0003, 0.001, 0.003, 0.01),
        "tuning_rates_adam": (0.0001, 0.0003, 0.001, 0.003, 0.01),
    },
}

PROFILE_NAMES = tuple(_PROFILES)
DEFAULT_PROFILE = "cpu"

#: Parameters whose value is a list: the type of their elements. On the command line a
#: list is comma-separated (``--set taylor_box_scales=1,2,inf``); an empty text is an empty list.
LIST_PARAMETERS: dict[str, type] = {
    "tasks": str,
    "exploration_sgd_rates": float,
    "taylor_box_scales": float,
    "taylor_box_scales_ce": float,
    "taylor_replay_layers": int,
    **{f"tuning_rates_{opt}": float for opt in OPTIMIZERS},
}


class Profile(Mapping[str, Any]):
    """A profile's parameters, validated and read-only.

    Index it by parameter name (``params["epochs"]``, the names ``--set`` takes); list
    values are tuples. The bookkeeping is apart from the parameters: :attr:`name` (the
    profile) and :attr:`overrides` (the typed ``{key: value}`` that were set on top of it,
    so that an explicit ``lr_<task>_<optimizer>`` wins over a tuned rate).
    """

    __slots__ = ("name", "overrides", "_values")
    name: str
    overrides: Mapping[str, Any]

    def __init__(self, name: str, values: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "overrides", MappingProxyType(dict(overrides)))
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("a Profile is read-only: make another with get_profile(name, overrides)")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Profile({self.name!r}, overrides={dict(self.overrides)!r})"

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain JSON-ready values (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}


def parse_horizon_schedule(text: str) -> int | None:
    """``"every"`` as ``None``, ``"log:K"`` as ``K`` (at least 1); anything else a :class:`ParameterError`."""
    text = str(text).strip()
    if text == "every":
        return None
    head, _, count = text.partition(":")
    if head == "log" and count.strip().isdigit() and int(count) >= 1:
        return int(count)
    raise ParameterError(f"taylor_horizons={text!r} must be 'every' or 'log:K' with K >= 1, like 'log:12'")


def _coerce_scalar(key: str, value: Any, kind: type, like: Any) -> Any:
    """Convert ``value`` (often a string from the command line) to ``kind``."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return text in ("true", "1")
        if kind is int:
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError(value)
            return int(as_float)
        return kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"parameter {key!r} needs a {kind.__name__} (like {like!r}), got {value!r}") from None


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` in the type of ``default``; a list parameter takes a comma-separated text or a sequence."""
    if key not in LIST_PARAMETERS:
        return _coerce_scalar(key, value, type(default), default)
    kind = LIST_PARAMETERS[key]
    items = [t for t in value.split(",") if t.strip()] if isinstance(value, str) else \
        list(value) if isinstance(value, (list, tuple)) else [value]
    example = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default) or "1,2"
    try:
        return tuple(_coerce_scalar(key, item, kind, None) for item in items)
    except ParameterError:
        raise ParameterError(
            f"{key} must be comma-separated {kind.__name__}s, like '{example}'; got {value!r}") from None


def _check(params: Mapping[str, Any]) -> None:
    """Reject values no run can use, naming the valid range or choices."""
    def need(cond: bool, message: str) -> None:
        if not cond:
            raise ParameterError(message)

    for key, value in params.items():
        if isinstance(value, float):  # no parameter takes an infinity or a NaN (box scales are lists)
            need(math.isfinite(value), f"{key}={value!r} must be a finite number")
        if key.startswith("lr_") and key != "lr_source":
            need(0 < value <= LARGEST_RATE,
                 f"learning rate {key}={value!r} must be > 0 and at most {LARGEST_RATE:.4g} (float32's largest)")
        if key.startswith("batch_"):
            need(value >= 1, f"batch size {key}={value!r} must be >= 1")
    need(0 <= params["seed"] <= LARGEST_SEED, f"seed={params['seed']!r} must be in 0..{LARGEST_SEED}")
    need(params["epochs"] >= 1, f"epochs={params['epochs']!r} must be >= 1")
    tasks = params["tasks"]
    need(bool(tasks) and all(t in TASKS for t in tasks) and len(set(tasks)) == len(tasks),
         f"tasks={','.join(tasks)!r} must name one or both of {', '.join(TASKS)}, once each")
    need(
        params["convnet_dataset"] in DATASETS,
        f"convnet_dataset={params['convnet_dataset']!r} is not one of {', '.join(DATASETS)}",
    )
    # the data sets' sizes bound the subsets: a larger request would be cut without a word
    train_images = min(TRAIN_IMAGES["mnist"], TRAIN_IMAGES[params["convnet_dataset"]])
    for key in ("train_size", "tuning_train_size"):
        need(0 <= params[key] <= train_images,
             f"{key}={params[key]!r} must be in 0..{train_images} (the training images; 0 = all of them)")
    need(1 <= params["eval_size"] <= TEST_IMAGES, f"eval_size={params['eval_size']!r} must be in 1..{TEST_IMAGES}")
    used = params["train_size"] or train_images
    need(params["eval_size"] <= used, f"eval_size={params['eval_size']!r} exceeds the {used} training images used")
    need(1 <= params["probe_size"] <= used,
         f"probe_size={params['probe_size']!r} must be in 1..{used} (the training images used)")
    need(params["convnet_width"] >= 1, "convnet_width must be >= 1")
    need(params["device"] in DEVICES, f"device={params['device']!r} is not one of {', '.join(DEVICES)}")
    need(0 <= params["rmsprop_decay"] < 1, "rmsprop_decay must be in [0, 1)")
    for key in ("adam_beta1", "adam_beta2"):
        need(0 <= params[key] < 1, f"{key}={params[key]!r} must be in [0, 1)")
    for key in ("rmsprop_eps", "adam_eps"):
        need(params[key] >= 0, f"{key}={params[key]!r} must be >= 0")
    need(0 <= params["sgd_momentum"] < 1, "sgd_momentum must be in [0, 1)")
    need(params["shatter_depth"] >= 1 and params["shatter_width"] >= 1, "shatter_depth and shatter_width must be >= 1")
    need(params["shatter_points"] >= 3, "shatter_points must be >= 3")
    need(params["config_round_stride"] >= 0, "config_round_stride must be >= 0 (0 = epoch ends only)")
    need(params["volume_values"] >= 1, "volume_values must be >= 1")
    need(params["volume_floor"] > 0, "volume_floor must be > 0")
    need(params["volume_units"] >= 0, "volume_units must be >= 0 (0 = all units)")
    need(params["sign_round_stride"] >= 1, "sign_round_stride must be >= 1")
    for key in ("taylor_neurons", "taylor_input_neurons", "taylor_conv_neurons", "volume_units", "config_round_stride"):
        need(params[key] >= 0, f"{key} must be >= 0")
    for key in ("taylor_input_stride", "taylor_round_stride", "taylor_samples", "sign_round_stride", "volume_values"):
        need(params[key] >= 1, f"{key} must be >= 1")
    need(params["taylor_ae_layer"] in (1, 2, 3, 4, 5),
         "taylor_ae_layer must be one of 1..5 (the output layer's H is too large)")
    need(0 < params["taylor_ce_tol"] < 1, "taylor_ce_tol must be in (0, 1)")
    parse_horizon_schedule(params["taylor_horizons"])
    need(params["volume_values"] <= 10_000, "volume_values must be at most 10000")
    for key in ("taylor_replay_stride", "taylor_replay_samples", "taylor_replay_iter"):
        need(params[key] >= 1, f"{key} must be >= 1")
    need(all(layer in (1, 2, 3, 4, 5) for layer in params["taylor_replay_layers"]),
         "taylor_replay_layers must be comma-separated convnet layers among 1..5, like '2,3' (empty for none)")
    for key in ("taylor_box_scales", "taylor_box_scales_ce"):
        need(len(params[key]) >= 1, f"{key} needs at least one box scale, like '1,2,4,inf'")
        need(all(b > 0 for b in params[key]), f"{key}: every box scale must be > 0 (inf: unconstrained)")
    rates = params["exploration_sgd_rates"]
    need(all(0 < r <= LARGEST_RATE for r in rates),
         f"exploration_sgd_rates must all be finite, > 0 and at most {LARGEST_RATE:.4g}")
    need(params["lr_source"] in LR_SOURCES, f"lr_source={params['lr_source']!r} is not one of {', '.join(LR_SOURCES)}")
    need(params["tuning_epochs"] >= 1, "tuning_epochs must be >= 1")
    need(params["tuning_train_size"] >= 0, "tuning_train_size must be >= 0 (0 = the whole training set)")
    for opt in OPTIMIZERS:
        key = f"tuning_rates_{opt}"
        rates = params[key]
        need(len(rates) >= 1, f"{key} needs at least one rate, like '0.0003,0.001,0.003'")
        need(all(0 < r <= LARGEST_RATE for r in rates), f"{key}: every rate must be finite, > 0 and at most "
                                                         f"{LARGEST_RATE:.4g}")
        need(len(set(rates)) == len(rates), f"{key} lists a rate twice")


def parse_assignments(pairs: list[str] | None) -> dict[str, str]:
    """Parse ``["key=value", ...]`` from the command line into a dict."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"expected key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def parameter_names(name: str = DEFAULT_PROFILE) -> list[str]:
    """The keys ``--set`` accepts (every profile has the same), sorted."""
    return sorted(_PROFILES[name])


def get_profile(name: str = DEFAULT_PROFILE, overrides: Mapping[str, Any] | None = None) -> Profile:
    """The parameters of profile ``name`` with ``overrides`` applied, typed and validated.

    Args:
        name: one of ``smoke``, ``cpu``, ``paper``.
        overrides: ``{key: value}``; values may be strings (a list parameter's comma-separated),
            converted to each key's type.

    Returns:
        A read-only :class:`Profile`.

    Raises:
        ParameterError: unknown profile or key, or a value out of range; the message
            lists the valid choices.
    """
    if name not in _PROFILES:
        raise ParameterError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILE_NAMES)}")
    params = dict(_PROFILES[name])
    typed: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key not in params:
            raise ParameterError(
                f"unknown parameter {key!r}; valid parameters: {', '.join(parameter_names(name))}"
            )
        typed[key] = params[key] = _coerce(key, value, _PROFILES[name][key])
    _check(params)
    return Profile(name, params, typed)
