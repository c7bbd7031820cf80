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

from .configurations import ConfigurationRecorder
from .profiles import exploration_sgd_rates
from .regret import taylor_recorders
from .signed_gradient import SignedGradientRecorder
from .store import Run, RunStore
from .training import Recorder, run_config

MAIN_OPTIMIZERS = ("adam", "rmsprop", "sgd")


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
    params: Mapping[str, Any],
    task: str,
    optimizer: str,
    lr: float | None = None,
    taylor: bool = True,
    store: RunStore | None = None,
    progress: bool | None = None,
) -> Run:
    """Train (or load) ``task`` with ``optimizer`` under the profile ``params``."""
    config = run_config(params, task, optimizer, lr=lr)
    recorders = standard_recorders(task, params, taylor=taylor)
    return (store or RunStore()).get(config, recorders, profile=params["profile"], progress=progress)


def optimizer_runs(params: Mapping[str, Any], task: str, store: RunStore | None = None) -> dict[str, Run]:
    """Adam, RMSProp and SGD on ``task``, each at the profile's learning rate, all recorders on."""
    return {opt: standard_run(params, task, opt, store=store) for opt in MAIN_OPTIMIZERS}


def exploration_label(optimizer: str, lr: float) -> str:
    return f"sgd {lr:g}" if optimizer == "sgd" else optimizer


def exploration_runs(params: Mapping[str, Any], task: str, store: RunStore | None = None) -> dict[str, Run]:
    """Figure 5's runs: ``{"rmsprop": ..., "adam": ..., "sgd 1": ..., "sgd 0.1": ..., ...}``."""
    main = optimizer_runs(params, task, store)
    runs = {"rmsprop": main["rmsprop"], "adam": main["adam"]}
    for lr in exploration_sgd_rates(params):
        runs[exploration_label("sgd", lr)] = standard_run(params, task, "sgd", lr=lr, taylor=False, store=store)
    return runs


def epoch_rows(runs: Mapping[str, Run], task: str) -> list[dict[str, Any]]:
    """Tidy per-epoch rows ``{task, optimizer, lr, epoch, train_loss, ...}`` of several runs."""
    rows = []
    for label, run in runs.items():
        for row in run.epoch_table():
            rows.append({"task": task, "optimizer": label, "lr": run.config.lr, "status": run.status, **row})
    return rows
