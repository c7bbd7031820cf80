"""Beyond the paper: optimizers it did not run, and its open questions, measured with its own tools.

One study per task (the paper's autoencoder and convnet on MNIST, at a size set per
profile): every optimizer of :data:`STUDIED` is tuned by the book's rule
(:func:`ntaylor_lib.paper.tuning.pick_rate`, on one seed), then trained at its pick on
several seeds with the diagnostics attached (:func:`ntaylor_lib.diagnostics.attach`),
giving per run the final training loss, the regret's log-log slope and the exploration
metrics, whole and per layer. SGD with annealed gradient noise runs at SGD's pick. The
hypotheses B1..B5 of :mod:`ntaylor_lib.paper.claims` are decided here from those rows, by
rules written before the numbers were seen; intervals are percentile bootstraps over seeds.
The tuning grid's runs record their exploration too (no Taylor recording), which gives
question 1 over every optimizer and every rate (:func:`rate_grid_correlations`).

Each finished run is kept as one JSON file under ``results/beyond/<setting>/`` (keyed by
everything that makes it), so an interrupted study goes on from the runs it finished.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..diagnostics import attach
from ..diagnostics.sequential import as_sequential
from ..exploration.metrics import novelty, switches
from ..runs.data import task_data
from ..runs.files import atomic_save_json, default_results_root, json_digest
from ..runs.models import autoencoder, convnet
from ..runs.optimizers import build_optimizer
from ..runs.profiles import ParameterError
from ..runs.progress import progress_bar
from . import claims
from .tuning import final_train_loss, pick_rate

FORMAT = 2  # of the stored rows: a change of what a row holds starts the study afresh
PAPER_OPTIMIZERS = ("sgd", "rmsprop", "adam")
NEW_OPTIMIZERS = ("momentum", "nesterov", "adagrad", "adamw", "signsgd")
STUDIED = PAPER_OPTIMIZERS + NEW_OPTIMIZERS
#: Rate grids, half-decades around each optimizer's usual rates (momentum's 0.9 multiplies
#: SGD's effective step by about 10, signSGD's steps are as long as Adam's).
GRIDS: dict[str, tuple[float, ...]] = {
    "sgd": (0.01, 0.03, 0.1, 0.3), "momentum": (0.001, 0.003, 0.01, 0.03), "nesterov": (0.001, 0.003, 0.01, 0.03),
    "adagrad": (0.003, 0.01, 0.03, 0.1), "rmsprop": (1e-4, 3e-4, 1e-3, 3e-3), "adam": (1e-4, 3e-4, 1e-3, 3e-3),
    "adamw": (1e-4, 3e-4, 1e-3, 3e-3), "signsgd": (1e-4, 3e-4, 1e-3, 3e-3),
}
#: Per profile: training images (0: all), epochs, minibatch, seeds, probe inputs, tuning epochs, the
#: convnet's width, how many points of each grid (the middle ones), noise scales, cross-entropy recording.
SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {"train_size": 256, "epochs": 2, "batch_size": 32, "seeds": 2, "probe_size": 32, "tuning_epochs": 1,
              "convnet_width": 4, "grid_points": 2, "noise": (0.1,), "stride": 2, "samples": 8},
    "cpu": {"train_size": 768, "epochs": 4, "batch_size": 64, "seeds": 3, "probe_size": 128, "tuning_epochs": 2,
            "convnet_width": 8, "grid_points": 2, "noise": (0.01, 0.1), "stride": 4, "samples": 16},
    "paper": {"train_size": 0, "epochs": 100, "batch_size": 64, "seeds": 5, "probe_size": 1000, "tuning_epochs": 10,
              "convnet_width": 64, "grid_points": 4, "noise": (0.01, 0.3, 1.0), "stride": 50, "samples": 64},
}
#: The scales each task records: the autoencoder's layer 3 (the paper's), the convnet's first
#: conv layer and its output layer, whole.
SCALES = {"autoencoder": ("layer:3",), "convnet": ("layer:1", "layer:5")}
LOSS = {"autoencoder": "mse", "convnet": "cross_entropy"}


def settings(profile: str) -> dict[str, Any]:
    if profile not in SETTINGS:
        raise ParameterError(f"profile={profile!r} is not one of {', '.join(SETTINGS)}")
    return dict(SETTINGS[profile])


def grid(optimizer: str, setting: Mapping[str, Any]) -> tuple[float, ...]:
    full = GRIDS[optimizer]
    keep = min(int(setting["grid_points"]), len(full))
    start = (len(full) - keep) // 2
    return full[start : start + keep]


def model_for(task: str, setting: Mapping[str, Any]) -> nn.Sequential:
    if task == "autoencoder":
        return as_sequential(autoencoder())
    return as_sequential(convnet(in_channels=1, image_size=28, width=int(setting["convnet_width"])))


#: The exploration metrics a diagnosed run keeps (one number each, as exploration_summary gives them).
EXPLORATION_METRICS = ("novelty", "switches", "volume")
#: What :func:`train_once` records: the diagnostics whole (regret and exploration), the activation
#: configurations alone (exploration, no Taylor recording: cheap), or nothing (the loss).
RECORD = ("taylor", "exploration", "none")


def train_once(task: str, optimizer: str, lr: float, seed: int, setting: Mapping[str, Any], data: Any,
               noise: float = 0.0, record: str = "taylor", epochs: int | None = None) -> dict[str, Any]:
    """One run: the final training loss (mean minibatch loss of the last epoch), and as ``record``
    says (:data:`RECORD`) the regret slopes and exploration of
    :func:`~ntaylor_lib.diagnostics.attach`'s diagnostics, or the exploration alone."""
    if record not in RECORD:
        raise ParameterError(f"record={record!r} is not one of {', '.join(RECORD)}")
    torch.manual_seed(seed)
    model = model_for(task, setting)
    opt = build_optimizer(optimizer, model.parameters(), lr, noise=noise, seed=seed)
    diag = None if record == "none" else attach(
        model, LOSS[task], SCALES[task] if record == "taylor" else (), box_scales=(1.0,),
        stride=int(setting["stride"]), samples=int(setting["samples"]), probe=data.probe_x)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss if task == "autoencoder" \
        else F.cross_entropy
    order, batch = torch.Generator().manual_seed(seed), int(setting["batch_size"])
    epochs = int(setting["epochs"] if epochs is None else epochs)
    losses: list[float] = []
    diverged = False
    for _ in range(epochs):
        perm = torch.randperm(len(data.train_x), generator=order)
        losses = []
        for i in range(len(perm) // batch):
            idx = perm[i * batch : (i + 1) * batch]
            opt.zero_grad()
            x, y = data.train_x[idx], data.train_y[idx]
            loss = diag.step(x, y) if diag is not None else loss_fn(model(x), y)
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        if diverged:
            break
        if diag is not None:
            diag.epoch_end()
    row: dict[str, Any] = {"task": task, "optimizer": optimizer, "noise": float(noise), "lr": float(lr),
                           "seed": int(seed), "diverged": diverged,
                           "final_train_loss": float(np.mean(losses)) if losses and not diverged else math.nan}
    if diag is not None and not diverged:
        if record == "taylor":
            fits = diag.slopes()
            row["slope"] = float(np.nanmean([f["slope"] for f in fits])) if fits else math.nan
            row["slopes"] = {f["scale"]: f["slope"] for f in fits}
        summary = diag.exploration()["summary"]
        row.update({k: summary[k] for k in EXPLORATION_METRICS})
        row["layers"] = diag.layer_exploration()
    return row


def _label(optimizer: str, noise: float) -> str:
    return f"sgd+noise {noise:g}" if noise else optimizer


class Study:
    """The study of one profile's setting; :meth:`rows` runs (or reads back) whatever is missing."""

    def __init__(self, profile: str, tasks: Sequence[str] = ("autoencoder", "convnet"), root=None) -> None:
        self.profile, self.setting, self.tasks = profile, settings(profile), tuple(tasks)
        self.folder = (default_results_root() if root is None else root) / "beyond" / f"{profile}-" \
            f"{json_digest({'setting': self.setting, 'format': FORMAT}, 12)}"
        self._data: dict[str, Any] = {}

    def data(self, task: str) -> Any:
        if task not in self._data:
            s = self.setting
            self._data[task] = task_data(task, "mnist", int(s["train_size"]), 100, int(s["probe_size"]))
        return self._data[task]

    def _cached(self, key: dict[str, Any], make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.folder / f"{key['kind']}-{key['task']}-{json_digest(key, 16)}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                pass  # a damaged file: run again
        row = make()
        atomic_save_json(row, path)
        return row

    def tuned(self, task: str, optimizer: str) -> tuple[float | None, list[dict[str, Any]]]:
        """The book's rule on the grid's final training losses (one seed, ``tuning_epochs`` epochs).

        The grid's runs also record their exploration (configurations on the probe, no Taylor
        recording), for question 1 over every rate (:func:`rate_grid_correlations`)."""
        rows = [self._cached({"kind": "tune", "task": task, "optimizer": optimizer, "lr": lr},
                             lambda lr=lr: train_once(task, optimizer, lr, 0, self.setting, self.data(task),
                                                      record="exploration",
                                                      epochs=int(self.setting["tuning_epochs"])))
                for lr in grid(optimizer, self.setting)]
        return pick_rate(rows), rows

    def rows(self, progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(runs, tuning)``: one row per task, optimizer (or noise variant) and seed; the tuning grid's rows."""
        variants = [(o, 0.0) for o in STUDIED] + [("sgd", float(n)) for n in self.setting["noise"]]
        seeds = range(int(self.setting["seeds"]))
        bar = progress_bar(total=len(self.tasks) * (len(STUDIED) * int(self.setting["grid_points"])
                                                    + len(variants) * len(seeds)),
                           desc=f"beyond the paper ({self.profile})", unit="run", disable=not progress)
        runs, tuning = [], []
        for task in self.tasks:
            picks = {}
            for optimizer in STUDIED:
                picks[optimizer], grid_rows = self.tuned(task, optimizer)
                tuning += grid_rows
                bar.update(len(grid_rows))
            for optimizer, noise in variants:
                lr = picks[optimizer]
                for seed in seeds:
                    if lr is None:  # every grid point diverged
                        runs.append({"task": task, "optimizer": optimizer, "noise": noise, "lr": math.nan,
                                     "seed": seed, "diverged": True, "final_train_loss": math.nan})
                    else:
                        key = {"kind": "run", "task": task, "optimizer": optimizer, "noise": noise, "lr": lr,
                               "seed": seed}
                        runs.append(self._cached(key, lambda o=optimizer, n=noise, s=seed, r=lr: train_once(
                            task, o, r, s, self.setting, self.data(task), noise=n)))
                    runs[-1]["variant"] = _label(optimizer, noise)
                    bar.update()
        bar.close()
        return runs, tuning


# ---------------------------------------------------------------------------- statistics over seeds


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than three pairs or no spread."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return math.nan

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties share their mean rank
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(x[keep]), ranks(y[keep])
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap_over_seeds(seeds: Sequence[int], statistic: Callable[[Sequence[int]], float],
                         samples: int = claims.BOOTSTRAP_SAMPLES, level: float = claims.BOOTSTRAP_LEVEL,
                         seed: int = 0) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``statistic`` of the seeds, and its percentile interval when the
    seeds are resampled with replacement (a statistic NaN on a resample is left out). The seeds
    may be any ids the statistic understands (:func:`rate_grid_correlations` resamples runs)."""
    seeds = list(seeds)
    rng = np.random.default_rng(seed)
    draws = [statistic(list(rng.choice(seeds, size=len(seeds), replace=True))) for _ in range(samples)]
    draws = np.asarray([d for d in draws if math.isfinite(d)])
    if not draws.size:
        return statistic(seeds), math.nan, math.nan
    tail = (1 - level) / 2
    return statistic(seeds), float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def _by(rows: Sequence[Mapping[str, Any]], task: str, variant: str) -> dict[int, Mapping[str, Any]]:
    return {int(r["seed"]): r for r in rows if r["task"] == task and r["variant"] == variant and not r["diverged"]}


def difference(rows: Sequence[Mapping[str, Any]], task: str, a: str, b: str, value: Callable[[Mapping], float]
               ) -> tuple[float, float, float]:
    """Mean over seeds of ``value`` for variant ``a`` minus that for ``b`` (paired by seed), with its interval."""
    ra, rb = _by(rows, task, a), _by(rows, task, b)
    seeds = sorted(set(ra) & set(rb))
    if len(seeds) < 2:
        return math.nan, math.nan, math.nan
    return bootstrap_over_seeds(seeds, lambda s: float(np.mean([value(ra[i]) for i in s])
                                                       - np.mean([value(rb[i]) for i in s])))


def summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per task and variant, the means over its finished seeds of loss, slope and the three metrics."""
    out = []
    for task, variant in dict.fromkeys((r["task"], r["variant"]) for r in rows):
        done = [r for r in rows if r["task"] == task and r["variant"] == variant and not r["diverged"]]
        row: dict[str, Any] = {"task": task, "optimizer": variant, "seeds": len(done)}
        for key in ("final_train_loss", "slope", "novelty", "switches", "volume"):
            values = [r[key] for r in done if math.isfinite(r.get(key, math.nan))]
            row[key] = float(np.mean(values)) if values else math.nan
        out.append(row)
    return out


def layer_ratios(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per task, variant and activation layer: mean novelty over seeds divided by SGD's."""
    out = []
    for task, variant in dict.fromkeys((r["task"], r["variant"]) for r in rows):
        mine, sgd = _by(rows, task, variant), _by(rows, task, "sgd")
        if not mine or not sgd or variant == "sgd":
            continue
        for k in range(len(next(iter(mine.values()))["layers"])):
            ratio = np.mean([_layer_novelty(r, k) for r in mine.values()]) / max(
                np.mean([_layer_novelty(r, k) for r in sgd.values()]), 1e-300)
            out.append({"task": task, "optimizer": variant, "layer": k + 1, "novelty_vs_sgd": float(ratio)})
    return out


def book_run_correlations(book_runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Question 1 over the book's own runs (``{task: {label: stored run}}``, Figure 5's: one seed each).

    Per task, Spearman's rank correlation over the runs between the final training loss (mean over
    the last epoch) and each exploration metric (novelty: mean over epochs >= 1; switches: mean over
    probe inputs), from the configurations recorded at epoch ends. Descriptive: one seed, no interval.
    """
    rows = []
    for task, runs in book_runs.items():
        loss, explored = [], {"novelty": [], "switches": []}
        for run in runs.values():
            arrays = run.arrays
            packed = arrays["configurations/packed"][arrays["configurations/epoch_end"]]
            units = int(arrays["configurations/units"])
            loss.append(final_train_loss(run))
            explored["novelty"].append(float(np.nanmean(novelty(packed, units)[1:])))
            explored["switches"].append(float(np.mean(switches(packed, units))))
        rows.append({"task": task, "runs": len(loss), "optimizers": ", ".join(runs),
                     **{f"rho(loss, {m})": spearman(loss, v) for m, v in explored.items()}})
    return rows


def rate_grid_correlations(tuning: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Question 1 over every optimizer and every rate: the tuning grid's runs (one seed each, all
    of the same length), per task.

    Spearman's rank correlation between the final training loss and each exploration metric
    over the grid's finished runs, with a percentile interval from resampling the runs (not
    seeds: each rate ran once), as ``"<metric> rho"``, ``"<metric> low"``, ``"<metric> high"``. A
    negative rho: the runs that explored more ended lower.
    """
    rows = []
    for task in dict.fromkeys(r["task"] for r in tuning):
        done = [r for r in tuning if r["task"] == task and not r["diverged"]
                and all(math.isfinite(r.get(m, math.nan)) for m in EXPLORATION_METRICS)]
        row: dict[str, Any] = {"task": task, "runs": len(done),
                               "optimizers": len({r["optimizer"] for r in done})}
        for metric in EXPLORATION_METRICS:
            def rho(picked: Sequence[int], metric: str = metric) -> float:
                return spearman([done[i]["final_train_loss"] for i in picked], [done[i][metric] for i in picked])

            estimate, low, high = bootstrap_over_seeds(range(len(done)), rho) if len(done) >= 3 \
                else (math.nan,) * 3
            row[f"{metric} rho"], row[f"{metric} low"], row[f"{metric} high"] = estimate, low, high
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- the hypotheses' rules


def b1_new_optimizers_regret(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> claims.ClaimResult:
    numbers, holds = {}, True
    for task in tasks:
        for optimizer in NEW_OPTIMIZERS:
            runs = _by(rows, task, optimizer).values()
            slopes = [r["slope"] for r in runs if math.isfinite(r.get("slope", math.nan))]
            mean = float(np.mean(slopes)) if slopes else math.nan
            numbers[f"{task} {optimizer} slope"] = mean
            holds &= math.isfinite(mean) and claims.grows_like_sqrt_n(mean)
    if not all(math.isfinite(v) for v in numbers.values()):
        return claims.unmeasurable("B1", "a run diverged, or had fewer than two horizons of positive regret", numbers)
    return claims.hypothesis("B1", holds, numbers)


def b2_exploration_and_loss(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> claims.ClaimResult:
    numbers, holds = {}, True
    for task in tasks:
        done = [r for r in rows if r["task"] == task and not r["diverged"]]
        seeds = sorted({int(r["seed"]) for r in done})
        for metric in ("novelty", "switches"):
            def rho(picked: Sequence[int], metric: str = metric) -> float:
                chosen = [r for s in picked for r in done if int(r["seed"]) == s]
                return spearman([r["final_train_loss"] for r in chosen], [r[metric] for r in chosen])

            estimate, low, high = bootstrap_over_seeds(seeds, rho)
            numbers[f"{task} rho(loss, {metric})"] = f"{estimate:.3g} [{low:.3g}, {high:.3g}]"
            holds &= math.isfinite(high) and high < 0
    return claims.hypothesis("B2", holds, numbers)


def _layer_novelty(row: Mapping[str, Any], which: int) -> float:
    return float(row["layers"][which]["novelty"])


def b3_early_layers(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> claims.ClaimResult:
    numbers, holds = {}, True
    for task in tasks:
        sgd = _by(rows, task, "sgd")
        for optimizer in ("rmsprop", "adam"):
            mine = _by(rows, task, optimizer)
            seeds = sorted(set(sgd) & set(mine))

            def gap(picked: Sequence[int], mine=mine) -> float:
                ratio = [np.mean([_layer_novelty(mine[s], k) for s in picked])
                         / max(np.mean([_layer_novelty(sgd[s], k) for s in picked]), 1e-300) for k in (0, -1)]
                return float(ratio[0] - ratio[1])

            estimate, low, high = bootstrap_over_seeds(seeds, gap) if len(seeds) >= 2 else (math.nan,) * 3
            numbers[f"{task} {optimizer}: first - last layer novelty ratio"] = estimate
            numbers[f"{task} {optimizer} interval"] = f"[{low:.3g}, {high:.3g}]"
            holds &= math.isfinite(low) and low > 0
    return claims.hypothesis("B3", holds, numbers)


def b4_noise(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str], scales: Sequence[float]) -> claims.ClaimResult:
    numbers, holds = {}, True
    for task in tasks:
        any_scale = False
        for scale in scales:
            variant = _label("sgd", scale)
            nov = difference(rows, task, variant, "sgd", lambda r: r["novelty"])
            loss = difference(rows, task, variant, "sgd", lambda r: r["final_train_loss"])
            numbers[f"{task} noise {scale:g}: novelty - SGD's"] = f"{nov[0]:.3g} [{nov[1]:.3g}, {nov[2]:.3g}]"
            numbers[f"{task} noise {scale:g}: loss - SGD's"] = f"{loss[0]:.3g} [{loss[1]:.3g}, {loss[2]:.3g}]"
            any_scale |= (math.isfinite(nov[1]) and nov[1] > 0) and (math.isfinite(loss[2]) and loss[2] < 0)
        holds &= any_scale
    return claims.hypothesis("B4", holds, numbers)


def b5_momentum(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> claims.ClaimResult:
    numbers, holds = {}, True
    for task in tasks:
        reference = difference(rows, task, "rmsprop", "sgd", lambda r: r["novelty"])
        numbers[f"{task} rmsprop - SGD novelty"] = f"{reference[0]:.3g} [{reference[1]:.3g}, {reference[2]:.3g}]"
        # the direction RMSProp's normalisation moves novelty, where its interval says there is one
        sign = np.sign(reference[0]) if math.isfinite(reference[1]) and (reference[1] > 0 or reference[2] < 0) \
            else 0.0
        for optimizer in ("momentum", "nesterov"):
            d = difference(rows, task, optimizer, "sgd", lambda r: r["novelty"])
            numbers[f"{task} {optimizer} - SGD novelty"] = f"{d[0]:.3g} [{d[1]:.3g}, {d[2]:.3g}]"
            excludes = math.isfinite(d[1]) and (d[1] > 0 or d[2] < 0)
            holds &= bool(sign) and excludes and np.sign(d[0]) == sign
    return claims.hypothesis("B5", holds, numbers)


__all__ = [
    "EXPLORATION_METRICS", "GRIDS", "NEW_OPTIMIZERS", "PAPER_OPTIMIZERS", "RECORD", "SETTINGS", "STUDIED", "Study",
    "b1_new_optimizers_regret", "b2_exploration_and_loss", "b3_early_layers", "b4_noise", "b5_momentum",
    "book_run_correlations", "bootstrap_over_seeds", "difference", "grid", "layer_ratios", "rate_grid_correlations",
    "settings", "spearman", "summary", "train_once",
]
