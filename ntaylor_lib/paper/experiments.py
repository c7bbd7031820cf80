"""The paper's experiments as named runs, shared by every chapter through the run store.

Chapters ask for runs only through these functions, which attach the same recorders
each time, so a run that several figures need has one key and trains once:

- :func:`optimizer_runs`: Adam, RMSProp and SGD at the profile's learning rates, with
  every recorder (Taylor quantities, activation configurations, signed-gradient steps):
  Figures 3, 4, 5 and 6 and Observation 3 read them.
- :func:`exploration_runs`: Figure 5's set, RMSProp and Adam (the runs above) and SGD
  at each of ``exploration_sgd_rates``, the latter without the Taylor recorders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exploration.configurations import ConfigurationRecorder
from ..exploration.signed_gradient import SignedGradientRecorder
from ..runs.config import RunConfig, run_config
from ..runs.models import AUTOENCODER_SIZES
from ..runs.profiles import TASKS, ParameterError, Profile
from ..runs.recorder import Recorder
from ..runs.store import Run, RunStore, run_key
from ..taylor.recorders import CEFactorRecorder, CEReplayRecorder, Group, MSEStatsRecorder, TaylorRecorder, spread
from .tuning import learning_rate

MAIN_OPTIMIZERS = ("adam", "rmsprop", "sgd")
#: What a page or claim says of a part whose task the profile does not run.
NOT_RUN = "not run at this setting"


def tasks_run(params: Profile, wanted: tuple[str, ...] = TASKS) -> list[str]:
    """The tasks of ``wanted`` (in its order) that the profile runs (its ``tasks``)."""
    return [task for task in wanted if task in params["tasks"]]


def not_run_reason(params: Profile, task: str) -> str:
    """Why a part that needs ``task`` has no result: the task is not run at this setting."""
    return f"the {task} is {NOT_RUN} (tasks={','.join(params['tasks'])})"


def experiment_config(params: Profile, task: str, optimizer: str, lr: float | None = None) -> RunConfig:
    """The :class:`RunConfig` of a paper experiment: ``task`` trained with ``optimizer``.

    The learning rate is ``lr`` when given; otherwise :func:`ntaylor_lib.paper.tuning.learning_rate`'s:
    the profile's ``lr_<task>_<optimizer>`` when ``lr_source`` is ``fixed`` or that key was set
    explicitly, else the tuning chapter's stored pick (a missing tuning raises
    :class:`~ntaylor_lib.runs.profiles.ParameterError` naming the fix).
    """
    return run_config(params, task, optimizer, learning_rate(params, task, optimizer) if lr is None else lr)


def taylor_recorders(task: str, params: Mapping[str, Any], solve_at_end: bool = True) -> list[TaylorRecorder]:
    """The Taylor recorders of ``task`` as a profile sets them (keys ``taylor_*``).

    Autoencoder: layer ``taylor_ae_layer`` whole, and up to ``taylor_neurons`` neurons of
    every layer (the input layer's ``taylor_input_neurons`` on every ``taylor_input_stride``-th
    round). Convnet: the first conv layer whole, up to ``taylor_conv_neurons`` neurons of each
    conv layer and ``taylor_neurons`` of each dense layer, on every ``taylor_round_stride``-th
    round, ``taylor_samples`` samples of each; and the whole layers ``taylor_replay_layers``
    replayed from weight snapshots (:class:`~ntaylor_lib.taylor.recorders.CEReplayRecorder`) of every
    ``taylor_replay_stride``-th round, ``taylor_replay_samples`` examples of each.
    """
    boxes = params["taylor_box_scales"]
    if task == "autoencoder":
        sizes = AUTOENCODER_SIZES
        groups = [Group(int(params["taylor_ae_layer"]), list(range(sizes[int(params["taylor_ae_layer"])])), True)]
        for l in range(1, len(sizes)):
            count = params["taylor_input_neurons"] if l == 1 else params["taylor_neurons"]
            if count:
                groups.append(Group(l, spread(int(count), sizes[l]), False))
        return [MSEStatsRecorder(groups, boxes, input_stride=params["taylor_input_stride"], solve_at_end=solve_at_end,
                                 horizons=params["taylor_horizons"])]
    if task == "convnet":
        width, hidden, classes = int(params["convnet_width"]), 192, 10
        groups = [Group(1, list(range(width)), True)]
        for l in (1, 2, 3):
            if params["taylor_conv_neurons"]:
                groups.append(Group(l, spread(int(params["taylor_conv_neurons"]), width), False))
        for l, c in ((4, hidden), (5, classes)):
            if params["taylor_neurons"]:
                groups.append(Group(l, spread(int(params["taylor_neurons"]), c), False))
        box_ce = params["taylor_box_scales_ce"]
        recorders: list[TaylorRecorder] = [
            CEFactorRecorder(groups, stride=params["taylor_round_stride"], samples=params["taylor_samples"],
                             box_scales=box_ce, solve_at_end=solve_at_end, tol=float(params["taylor_ce_tol"]),
                             horizons=params["taylor_horizons"])]
        replayed = params["taylor_replay_layers"]
        if replayed:
            sizes = {1: width, 2: width, 3: width, 4: hidden, 5: classes}
            recorders.append(CEReplayRecorder(
                [Group(l, list(range(sizes[l])), True) for l in replayed], stride=params["taylor_replay_stride"],
                samples=params["taylor_replay_samples"], box_scales=box_ce, solve_at_end=solve_at_end,
                tol=float(params["taylor_ce_tol"]), max_iter=params["taylor_replay_iter"],
                horizons=params["taylor_horizons"]))
        return recorders
    raise ParameterError(f"task={task!r} is not one of {', '.join(TASKS)}")


def standard_recorders(task: str, params: Mapping[str, Any], taylor: bool = True) -> list[Recorder]:
    """The recorders a standard run carries (their specs are part of its key)."""
    recorders: list[Recorder] = [
        ConfigurationRecorder(round_stride=int(params["config_round_stride"])),
        SignedGradientRecorder(round_stride=int(params["sign_round_stride"])),
    ]
    if taylor:
        recorders += taylor_recorders(task, params)
    return recorders


def standard_run(
    params: Profile,
    task: str,
    optimizer: str,
    lr: float | None = None,
    taylor: bool = True,
    store: RunStore | None = None,
    progress: bool | None = None,
) -> Run:
    """Train (or load) ``task`` with ``optimizer`` under the profile ``params``."""
    config = experiment_config(params, task, optimizer, lr)
    recorders = standard_recorders(task, params, taylor=taylor)
    return (store or RunStore()).get(config, recorders, profile=params.name, progress=progress)


def optimizer_runs(params: Profile, task: str, store: RunStore | None = None) -> dict[str, Run]:
    """Adam, RMSProp and SGD on ``task``, each at the profile's learning rate, all recorders on."""
    return {opt: standard_run(params, task, opt, store=store) for opt in MAIN_OPTIMIZERS}


def exploration_label(optimizer: str, lr: float) -> str:
    return f"sgd {lr:g}" if optimizer == "sgd" else optimizer


def _exploration_specs(params: Profile) -> dict[str, tuple[str, float | None, bool]]:
    """Figure 5's runs as ``{label: (optimizer, lr, Taylor recorders on)}`` (``lr`` None: the tuned rate)."""
    specs: dict[str, tuple[str, float | None, bool]] = {
        opt: (opt, None, True) for opt in ("rmsprop", "adam")}  # the main runs of training_curves, shared
    specs.update({exploration_label("sgd", lr): ("sgd", lr, False) for lr in params["exploration_sgd_rates"]})
    return specs


def exploration_runs(params: Profile, task: str, store: RunStore | None = None) -> dict[str, Run]:
    """Figure 5's runs: ``{"rmsprop": ..., "adam": ..., "sgd 1": ..., "sgd 0.1": ..., ...}``."""
    store = store or RunStore()
    return {label: standard_run(params, task, optimizer, lr=lr, taylor=taylor, store=store)
            for label, (optimizer, lr, taylor) in _exploration_specs(params).items()}


def stored_exploration_runs(params: Profile, task: str, store: RunStore | None = None) -> dict[str, Run]:
    """Those of Figure 5's runs (:func:`exploration_runs`) that the store holds already, trained by no
    one here: ``{}`` when the profile's rates are not tuned yet. For pages that read the book's runs
    without making a lone chapter train them."""
    store = store or RunStore()
    found = {}
    for label, (optimizer, lr, taylor) in _exploration_specs(params).items():
        try:
            config = experiment_config(params, task, optimizer, lr)
        except ParameterError:  # no tuning stored: no run of this profile can exist yet
            return {}
        run = store.load(run_key(config, standard_recorders(task, params, taylor=taylor)))
        if run is not None and run.status == "complete":
            found[label] = run
    return found


def epoch_rows(runs: Mapping[str, Run], task: str) -> list[dict[str, Any]]:
    """Tidy per-epoch rows ``{task, optimizer, lr, epoch, train_loss, ...}`` of several runs."""
    rows = []
    for label, run in runs.items():
        for row in run.epoch_table():
            rows.append({"task": task, "optimizer": label, "lr": run.config.lr, "status": run.status, **row})
    return rows
