"""Learning-rate tuning: a sweep per task and optimizer, a stated rule, stored choices.

The paper tuned its learning rates "for optimal performance" without saying how.
Here, for each task and optimizer:

- every rate of ``tuning_rates_<optimizer>`` (shared by both tasks) trains for
  ``tuning_epochs`` epochs on ``tuning_train_size`` training images (0: all), with the
  profile's other settings, as one papermill execution of ``book/points/lr_point.md``
  per rate (:func:`ntaylor_lib.sweep.run_sweep`); the runs themselves live in the run
  store, so a rerun of the sweep is free;
- **the rule** (:data:`RULE`, :func:`pick_rate`): the rate with the lowest final training
  loss, the mean of the incurred minibatch losses ``L_n`` over the last epoch's rounds,
  wins; a run that diverged, whose loss is not finite, or whose notebook failed is
  never picked; ties go to the smaller rate;
- the choices, the rule, the grid, the tuning epochs, the sweep table's path and the
  provenance (versions, date, profile parameters) are written to
  ``<results root>/tuning/<profile>/tuned_learning_rates.json`` (:func:`tuned_path`).

With ``lr_source = "tuned"`` :func:`ntaylor_lib.paper.experiments.experiment_config` takes
its default rate from that file (:func:`learning_rate`); a rate given explicitly (``lr=``) or an
``lr_<task>_<optimizer>`` set with ``--set`` still wins. ``lr_source = "fixed"`` uses the
profile's hand-picked ``lr_*`` values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..runs.config import RunConfig, resolve_device, run_config
from ..runs.files import ROOT, atomic_save_json, default_results_root, environment, json_digest
from ..runs.profiles import OPTIMIZERS, TASKS, ParameterError, Profile
from ..runs.store import Run, RunStore, run_key
from ..sweep import run_sweep

POINT_NOTEBOOK = ROOT / "book" / "points" / "lr_point.md"
TUNED_FILE = "tuned_learning_rates.json"
RULE = (
    "per task and optimizer, the rate with the lowest final training loss (the mean of the "
    "incurred minibatch losses over the last epoch's rounds) after tuning_epochs epochs; "
    "runs that diverged, with a non-finite loss, or whose notebook failed are never picked; "
    "ties go to the smaller rate"
)
# RunConfig fields that must agree between the tuning runs and the runs that use their
# pick (the rate aside): the model, data and optimizer settings the rate was tuned for.
_MATCHED_FIELDS = ("batch_size", "width", "dataset", "settings", "epochs", "train_size")


def tuning_dir(profile: str, root: Path | str | None = None) -> Path:
    """Where a profile's tuning results live: ``<results root>/tuning/<profile>``."""
    return Path(root if root is not None else default_results_root()) / "tuning" / profile


def tuned_path(profile: str, root: Path | str | None = None) -> Path:
    """The file holding a profile's tuned learning rates (read by :func:`learning_rate`)."""
    return tuning_dir(profile, root) / TUNED_FILE


def tuning_rates(params: Mapping[str, Any], optimizer: str) -> list[float]:
    """The candidate learning rates of ``optimizer`` in the tuning sweep, ascending."""
    return sorted(params[f"tuning_rates_{optimizer}"])


def tuning_config(params: Mapping[str, Any], task: str, optimizer: str, lr: float) -> RunConfig:
    """The run of one sweep point: the profile's run at rate ``lr``, ``tuning_epochs`` epochs on
    ``tuning_train_size`` images."""
    config = run_config(params, task, optimizer, lr)
    return dataclasses.replace(config, epochs=int(params["tuning_epochs"]), train_size=int(params["tuning_train_size"]))


def final_train_loss(run: Run) -> float:
    """Mean incurred loss ``L_n`` over the rounds of the last epoch; NaN unless the run completed."""
    losses = run.round_loss
    if run.status != "complete" or len(losses) == 0:
        return math.nan
    per_epoch = len(losses) // run.config.epochs
    return float(np.mean(losses[-per_epoch:]))


def tuning_point(
    params: Profile, task: str, optimizer: str, lr: float, store: RunStore | None = None, threads: int = 0
) -> dict[str, Any]:
    """Train (or load) one sweep point; what the point notebook glues.

    Args:
        threads: torch's CPU threads for this process (0: leave torch's default); the
            sweep gives each of its parallel workers its share of the cores.

    Returns:
        ``{"final_train_loss", "diverged", "train_seconds", "run_key"}`` as plain Python
        values (floats, bool, str), so they survive the notebook's text outputs.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    run = (store or RunStore()).get(tuning_config(params, task, optimizer, lr), profile=params.name, progress=False)
    loss = final_train_loss(run)
    return {
        "final_train_loss": loss,
        "diverged": bool(run.status != "complete" or not math.isfinite(loss)),
        "train_seconds": float(run.manifest.get("wall_time_s", math.nan)),
        "run_key": run.key,
    }


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _as_bool(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1")


def eligible(row: Mapping[str, Any]) -> bool:
    """Whether a sweep row may be picked: its notebook ran, the run did not diverge, its loss is finite."""
    loss = _as_float(row.get("final_train_loss"))
    return row.get("status", "ok") == "ok" and not _as_bool(row.get("diverged", False)) and math.isfinite(loss)


def pick_rate(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The rule (:data:`RULE`) on the rows of one task and optimizer: the winning ``lr``, or ``None``.

    Args:
        rows: each with ``lr``, ``final_train_loss``, ``diverged`` and (optionally) ``status``.

    Returns:
        The rate with the lowest final training loss among the eligible rows (ties: the
        smaller rate); ``None`` when no row is eligible.
    """
    candidates = [(_as_float(r["final_train_loss"]), float(r["lr"])) for r in rows if eligible(r)]
    return min(candidates)[1] if candidates else None


def grid_edge(lr: float | None, grid: Sequence[float]) -> str:
    """``"lowest"``/``"highest"`` when a pick sits at an end of its grid (the optimum may lie beyond),
    ``"only"`` for a one-rate grid, else ``""``."""
    if lr is None or not grid:
        return ""
    if len(grid) == 1:
        return "only"
    if lr == min(grid):
        return "lowest"
    return "highest" if lr == max(grid) else ""


def sweep_grid(
    params: Mapping[str, Any], tasks: Sequence[str] = TASKS, optimizers: Sequence[str] = OPTIMIZERS
) -> list[dict[str, Any]]:
    """The sweep's points, ``{"task", "optimizer", "lr"}``: each task x optimizer x rate of
    ``tuning_rates_<optimizer>``."""
    bad = [name for name in (*tasks, *optimizers) if name not in TASKS + OPTIMIZERS]
    if bad or not tasks or not optimizers:
        raise ParameterError(f"tune over tasks from {', '.join(TASKS)} and optimizers from {', '.join(OPTIMIZERS)}; "
                             f"got {bad or 'none'}")
    return [{"task": t, "optimizer": o, "lr": lr} for t in tasks for o in optimizers for lr in tuning_rates(params, o)]


def tidy_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sweep's rows with typed columns: ``task, optimizer, lr, status, final_train_loss, diverged, ...``."""
    out = []
    for row in rows:
        loss = _as_float(row.get("final_train_loss"))
        out.append({
            "task": str(row["task"]),
            "optimizer": str(row["optimizer"]),
            "lr": float(row["lr"]),
            "status": str(row.get("status", "ok")),
            "final_train_loss": loss,
            "diverged": _as_bool(row.get("diverged", False)) or not math.isfinite(loss),
            "train_seconds": _as_float(row.get("train_seconds")),
            "seconds": _as_float(row.get("seconds")),
            "notebook": str(row.get("notebook", "")),
            "error": row.get("error") or "",
            "reused": _as_bool(row.get("reused", False)),
        })
    return sorted(out, key=lambda r: (TASKS.index(r["task"]), OPTIMIZERS.index(r["optimizer"]), r["lr"]))


def choose(rows: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Apply the rule per task and optimizer: ``{task: {optimizer: {"lr", "final_train_loss", "edge", "grid"}}}``.

    Only the task and optimizer pairs present in ``rows`` get a choice; ``lr`` is ``None``
    when every rate of the grid diverged or failed.
    """
    choices: dict[str, dict[str, dict[str, Any]]] = {}
    for task in TASKS:
        for opt in OPTIMIZERS:
            group = [r for r in rows if r["task"] == task and r["optimizer"] == opt]
            if not group:
                continue
            lr = pick_rate(group)
            grid = tuning_rates(params, opt)
            loss = next((_as_float(r["final_train_loss"]) for r in group if float(r["lr"]) == lr), math.nan)
            choices.setdefault(task, {})[opt] = {
                "lr": lr,
                "final_train_loss": None if lr is None else loss,
                "edge": grid_edge(lr, grid),
                "grid": grid,
                "config": None if lr is None else tuning_config(params, task, opt, lr).to_dict(),
            }
    return choices


def _json_safe(value: Any) -> Any:
    """NaN and infinities as ``None``, so the stored files are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def sweep_folder(params: Profile) -> Path:
    """Where the sweep keeps its executed point notebooks (one folder per set of overrides)."""
    name = "sweep"
    if params.overrides:
        name += "-" + json_digest(dict(params.overrides), 8, default=str)
    return tuning_dir(params.name) / name


def tune_learning_rates(
    params: Profile,
    workers: int = 1,
    progress: bool = True,
    tasks: Sequence[str] | None = None,
    optimizers: Sequence[str] = OPTIMIZERS,
) -> list[dict[str, Any]]:
    """Run the sweep, apply the rule and store the choices where the experiments read them.

    Args:
        params: the validated profile (its overrides are passed on to every point).
        workers: parallel papermill processes.
        progress: show the sweep's progress bar and status lines (``False``: silent; failed
            points are still in the returned table, with their error).
        tasks, optimizers: what to tune (default: the profile's ``tasks``, every optimizer); the
            stored file then holds choices for these only.

    Returns:
        The sweep table: one row per task, optimizer and rate (see :func:`tidy_rows`),
        with ``picked`` (the rule's choice) and ``edge`` (see :func:`grid_edge`) added.
        The choices are in :func:`tuned_path`, the table beside them in ``sweep_table.json``,
        under the results root (``$NTAYLOR_RESULTS`` or ``results/``), where the point
        notebooks also store their runs.

    Raises:
        RuntimeError: every point's notebook failed (nothing was tuned; the first error is named).
    """
    with contextlib.redirect_stderr(sys.stderr if progress else io.StringIO()):
        raw = run_sweep(
            POINT_NOTEBOOK,
            sweep_grid(params, params["tasks"] if tasks is None else tasks, optimizers),
            out_dir=sweep_folder(params),
            workers=workers,
            # each worker's kernel gets its share of the cores: no oversubscribed torch threads
            base_parameters={"profile": params.name, "overrides": _sweep_overrides(params),
                             "threads": max(1, (os.cpu_count() or 1) // max(1, workers))},
            progress=progress,
        )
    rows = tidy_rows(raw)
    if all(r["status"] != "ok" for r in rows):
        raise RuntimeError(f"every point of the learning-rate sweep failed, e.g. {rows[0]['error']} "
                           f"(see {rows[0]['notebook']}); nothing was tuned")
    store_choices(params, rows)
    return rows


def _sweep_overrides(params: Profile) -> dict[str, Any]:
    """The profile's overrides as a point notebook's ``overrides`` parameter (list values as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.overrides.items()}


def store_choices(params: Profile, rows: list[dict[str, Any]]) -> Path:
    """Apply the rule to a sweep table and write the choices where :func:`learning_rate` reads them.

    Marks each row with ``picked`` and ``edge`` (in place), writes the table to
    ``sweep_table.json`` and the choices, with the rule, grid, tuning epochs, table path
    and provenance, to :func:`tuned_path`. Returns that path.
    """
    folder = tuning_dir(params.name)
    choices = choose(rows, params)
    for row in rows:
        choice = choices[row["task"]][row["optimizer"]]
        row["picked"] = choice["lr"] == row["lr"]
        row["edge"] = choice["edge"] if row["picked"] else ""
    table_path = folder / "sweep_table.json"
    atomic_save_json(_json_safe(rows), table_path)
    path = tuned_path(params.name)
    atomic_save_json(_json_safe({
        "profile": params.name,
        "rule": RULE,
        "tuning_epochs": int(params["tuning_epochs"]),
        "tuning_train_size": int(params["tuning_train_size"]),
        "grid": {opt: tuning_rates(params, opt) for opt in OPTIMIZERS if any(opt in c for c in choices.values())},
        "choices": choices,
        "sweep_table": str(table_path),
        "parameters": params.to_dict(),
        "overrides": _sweep_overrides(params),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(resolve_device(params["device"])),
    }), path)
    return path


def read_tuned(profile: str, root: Path | str | None = None) -> dict[str, Any]:
    """The stored tuning of ``profile``; a missing file raises :class:`ParameterError` naming the fix."""
    path = tuned_path(profile, root)
    if not path.is_file():
        raise ParameterError(
            f"lr_source is 'tuned' but profile {profile!r} has no tuned learning rates yet ({path} is missing). "
            f"Run the tuning chapter first: `python -m ntaylor_lib book --only lr_tuning --profile {profile}` "
            f"(the whole book, `python -m ntaylor_lib book --profile {profile}`, runs it first), "
            "or use the profile's hand-picked rates with `--set lr_source=fixed`."
        )
    return json.loads(path.read_text())


def learning_rate(params: Profile, task: str, optimizer: str, root: Path | str | None = None) -> float:
    """The rate the experiments use for ``task`` and ``optimizer`` under a profile.

    The profile's ``lr_<task>_<optimizer>`` when ``lr_source`` is ``"fixed"`` or that key
    was set explicitly (``--set``); otherwise the tuned choice stored by
    :func:`tune_learning_rates`, which must have been made for the same model, data,
    optimizer settings and tuning grid.

    Raises:
        ParameterError: no tuned file, no eligible rate, or a file tuned for other settings;
            the message names the fix.
    """
    key = f"lr_{task}_{optimizer}"
    if params["lr_source"] == "fixed" or key in params.overrides:
        return float(params[key])
    profile = params.name
    stored = read_tuned(profile, root)
    fix = ("rerun the tuning with the same settings: "
           f"`python -m ntaylor_lib book --only lr_tuning --profile {profile}` plus your --set options")
    choice = stored["choices"].get(task, {}).get(optimizer)
    if choice is None:
        raise ParameterError(f"the stored tuning of profile {profile!r} did not sweep {task}/{optimizer}; {fix}")
    grid = tuning_rates(params, optimizer)
    if [float(r) for r in choice["grid"]] != grid:
        raise ParameterError(f"the stored tuning of {task}/{optimizer} swept {choice['grid']}, "
                             f"but tuning_rates_{optimizer} is now {grid}; {fix}")
    if choice["lr"] is None:
        raise ParameterError(
            f"no rate of tuning_rates_{optimizer}={grid} trained {task} without diverging; widen the grid "
            f"(--set tuning_rates_{optimizer}=...) and {fix}, or set the rate yourself with --set {key}=..."
        )
    current = tuning_config(params, task, optimizer, float(choice["lr"])).to_dict()
    differ = [f for f in _MATCHED_FIELDS if current[f] != choice["config"][f]]
    if differ:
        then = choice["config"]
        changes = ", ".join(f"{f}: {then[f]!r} then, {current[f]!r} now" for f in differ)
        raise ParameterError(f"the stored tuned rate of {task}/{optimizer} was picked with other settings ({changes}); "
                             f"{fix}")
    return float(choice["lr"])


def choice_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The picked rows of a sweep table (one per task and optimizer that had an eligible rate)."""
    return [dict(r) for r in rows if r.get("picked")]


def epoch_curves(params: Profile, rows: Sequence[Mapping[str, Any]],
                 store: RunStore | None = None) -> list[dict[str, Any]]:
    """Per-epoch mean incurred training loss of every stored sweep run (the quantity the rule compares).

    Reloads each point's run from the run store by its configuration (nothing trains);
    points whose run is not stored or did not complete (diverged) are left out, as are
    non-finite values.
    """
    store = store or RunStore()
    out = []
    for row in rows:
        config = tuning_config(params, row["task"], row["optimizer"], float(row["lr"]))
        run = store.load(run_key(config))
        if run is None or run.status != "complete":
            continue
        losses = run.round_loss
        per_epoch = max(len(losses) // config.epochs, 1)
        for epoch in range(1, config.epochs + 1):
            value = float(np.mean(losses[(epoch - 1) * per_epoch : epoch * per_epoch]))
            if math.isfinite(value):
                out.append({"task": row["task"], "optimizer": row["optimizer"], "lr": float(row["lr"]),
                            "rate": f"{row['optimizer']} {float(row['lr']):g}", "epoch": epoch, "train_loss": value})
    return out
