"""The paper's experiments as named runs, shared by every chapter through the run store.

Every chapter asks for a task's runs through :func:`standard_run`, which attaches the
same recorders each time, so a run that three figures need has one key and trains once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .profiles import OPTIMIZERS
from .store import Run, RunStore
from .training import Recorder, run_config


def standard_recorders(task: str, params: Mapping[str, Any]) -> list[Recorder]:
    """The recorders every standard run carries (part of its key)."""
    return []


def standard_run(
    params: Mapping[str, Any],
    task: str,
    optimizer: str,
    lr: float | None = None,
    store: RunStore | None = None,
    progress: bool | None = None,
) -> Run:
    """Train (or load) ``task`` with ``optimizer`` under the profile ``params``."""
    config = run_config(params, task, optimizer, lr=lr)
    return (store or RunStore()).get(config, standard_recorders(task, params), profile=params["profile"], progress=progress)


def optimizer_runs(params: Mapping[str, Any], task: str, store: RunStore | None = None) -> dict[str, Run]:
    """Adam, RMSProp and SGD on ``task``, each at the profile's learning rate."""
    return {opt: standard_run(params, task, opt, store=store) for opt in ("adam", "rmsprop", "sgd") if opt in OPTIMIZERS}


def epoch_rows(runs: Mapping[str, Run], task: str) -> list[dict[str, Any]]:
    """Tidy per-epoch rows ``{task, optimizer, lr, epoch, train_loss, ...}`` of several runs."""
    rows = []
    for optimizer, run in runs.items():
        for row in run.epoch_table():
            rows.append({"task": task, "optimizer": optimizer, "lr": run.config.lr, "status": run.status, **row})
    return rows
