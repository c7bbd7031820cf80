"""The beyond-the-paper study's statistics and rules, on rows whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from ntaylor_lib.paper import beyond, claims
from ntaylor_lib.runs.profiles import ParameterError


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 5, size=12).astype(float), rng.normal(size=12)
    assert beyond.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(beyond.spearman([1.0, 2.0], [3.0, 4.0]))  # too few pairs
    assert math.isnan(beyond.spearman([1.0, 1.0, 1.0], [3.0, 4.0, 5.0]))  # no spread


def test_the_bootstrap_interval_holds_the_estimate_and_is_a_point_for_a_constant():
    values = {0: 1.0, 1: 2.0, 2: 4.0}
    estimate, low, high = beyond.bootstrap_over_seeds([0, 1, 2], lambda s: float(np.mean([values[i] for i in s])))
    assert estimate == pytest.approx(7 / 3) and 1.0 <= low <= estimate <= high <= 4.0
    assert beyond.bootstrap_over_seeds([0, 1, 2], lambda s: 5.0)[1:] == (5.0, 5.0)


def _rows(task="autoencoder", seeds=4, **variants):
    """Rows of each variant: ``name=(novelty, loss, slope, [layer novelties])`` plus a little seed noise."""
    rows = []
    for variant, (novelty, loss, slope, layers) in variants.items():
        optimizer = "sgd" if variant.startswith("sgd+noise") else variant
        noise = float(variant.split()[-1]) if variant.startswith("sgd+noise") else 0.0
        for s in range(seeds):
            jitter = 1 + 0.01 * s
            rows.append({"task": task, "variant": variant, "optimizer": optimizer, "noise": noise, "seed": s,
                         "diverged": False, "novelty": novelty * jitter, "switches": novelty * jitter,
                         "final_train_loss": loss * jitter, "slope": slope,
                         "layers": [{"novelty": v * jitter} for v in layers]})
    return rows


def test_the_rules_say_supported_only_where_the_rows_show_it():
    rows = _rows(**{"sgd": (0.1, 1.0, 0.4, [0.1, 0.1]), "rmsprop": (0.3, 0.5, 0.4, [0.6, 0.2]),
                    "adam": (0.2, 0.6, 0.4, [0.4, 0.15]), "momentum": (0.25, 0.7, 0.3, [0.2, 0.2]),
                    "nesterov": (0.22, 0.8, 0.3, [0.2, 0.2]), "adagrad": (0.12, 0.9, 0.5, [0.1, 0.1]),
                    "adamw": (0.2, 0.6, 0.45, [0.3, 0.1]), "signsgd": (0.4, 0.4, 0.55, [0.5, 0.3]),
                    "sgd+noise 0.1": (0.15, 0.95, 0.4, [0.1, 0.1])})
    tasks = ["autoencoder"]
    assert beyond.b1_new_optimizers_regret(rows, tasks).verdict == claims.SUPPORTED  # 0.55 <= 0.6
    assert beyond.b2_exploration_and_loss(rows, tasks).verdict == claims.SUPPORTED  # more novelty, lower loss
    assert beyond.b3_early_layers(rows, tasks).verdict == claims.SUPPORTED  # 6x and 4x SGD at layer 1, 2x at 2
    assert beyond.b4_noise(rows, tasks, [0.1]).verdict == claims.SUPPORTED
    assert beyond.b5_momentum(rows, tasks).verdict == claims.SUPPORTED
    flipped = _rows(**{"sgd": (0.3, 1.0, 0.7, [0.3, 0.3]), "rmsprop": (0.5, 0.5, 0.4, [0.5, 0.5]),
                       "adam": (0.4, 0.6, 0.4, [0.4, 0.4]), "momentum": (0.1, 0.7, 0.3, [0.1, 0.1]),
                       "nesterov": (0.1, 0.8, 0.3, [0.1, 0.1]), "adagrad": (0.2, 0.9, 0.8, [0.2, 0.2]),
                       "adamw": (0.2, 0.6, 0.45, [0.2, 0.2]), "signsgd": (0.2, 0.4, 0.55, [0.2, 0.2]),
                       "sgd+noise 0.1": (0.2, 1.2, 0.4, [0.2, 0.2])})
    assert beyond.b1_new_optimizers_regret(flipped, tasks).verdict == claims.NOT_SUPPORTED  # adagrad 0.8
    assert beyond.b3_early_layers(flipped, tasks).verdict == claims.NOT_SUPPORTED  # equal ratios
    assert beyond.b4_noise(flipped, tasks, [0.1]).verdict == claims.NOT_SUPPORTED  # less novelty, higher loss
    assert beyond.b5_momentum(flipped, tasks).verdict == claims.NOT_SUPPORTED  # opposite direction to RMSProp


def test_a_diverged_run_makes_b1_unmeasurable():
    rows = _rows(**{o: (0.1, 1.0, 0.4, [0.1]) for o in beyond.STUDIED})
    for r in rows:
        if r["variant"] == "signsgd":
            r["diverged"] = True
    assert beyond.b1_new_optimizers_regret(rows, ["autoencoder"]).verdict == claims.NOT_MEASURABLE


def test_rate_grid_correlations_rank_the_grid_runs_and_resample_runs():
    """Loss falling as every metric rises gives rho = -1 on every resample; a diverged run, or one
    without exploration, is left out; too few runs give NaN."""
    tuning = [{"task": "convnet", "optimizer": o, "lr": lr, "diverged": False, "final_train_loss": 1.0 / (1 + i),
               "novelty": 0.1 * i, "switches": 0.2 * i, "volume": -5.0 + i}
              for i, (o, lr) in enumerate([("sgd", 0.01), ("sgd", 0.1), ("adam", 1e-3), ("adam", 3e-3)])]
    tuning.append({"task": "convnet", "optimizer": "adam", "lr": 1.0, "diverged": True,
                   "final_train_loss": math.nan})
    tuning.append({"task": "convnet", "optimizer": "sgd", "lr": 0.3, "diverged": False, "final_train_loss": 0.01})
    tuning += [{"task": "autoencoder", "optimizer": "sgd", "lr": lr, "diverged": False, "final_train_loss": 1.0,
                "novelty": 0.1, "switches": 0.1, "volume": 0.0} for lr in (0.1, 0.3)]
    convnet, autoencoder = beyond.rate_grid_correlations(tuning)
    assert (convnet["task"], convnet["runs"], convnet["optimizers"]) == ("convnet", 4, 2)
    for metric in beyond.EXPLORATION_METRICS:
        assert convnet[f"{metric} rho"] == pytest.approx(-1.0)
        assert convnet[f"{metric} low"] == pytest.approx(-1.0) and convnet[f"{metric} high"] == pytest.approx(-1.0)
        assert math.isnan(autoencoder[f"{metric} rho"])  # two runs: no correlation
    shuffled = [dict(r, novelty=v) for r, v in zip(tuning[:4], (0.3, 0.0, 0.2, 0.1))]
    assert beyond.rate_grid_correlations(shuffled)[0]["novelty rho"] == pytest.approx(
        spearmanr([r["final_train_loss"] for r in shuffled], [r["novelty"] for r in shuffled]).statistic)


def test_train_once_refuses_an_unknown_record():
    with pytest.raises(ParameterError, match="record='all'"):
        beyond.train_once("autoencoder", "sgd", 0.1, 0, beyond.settings("smoke"), None, record="all")


def test_settings_and_grids():
    with pytest.raises(ParameterError, match="profile='huge'"):
        beyond.settings("huge")
    assert beyond.grid("adam", {"grid_points": 2}) == (3e-4, 1e-3)
    assert beyond.grid("adam", {"grid_points": 9}) == beyond.GRIDS["adam"]
    assert set(beyond.GRIDS) == set(beyond.STUDIED) and set(beyond.SETTINGS) == {"smoke", "cpu", "paper"}


def test_book_run_correlations_rank_the_runs_by_their_recorded_exploration():
    """Runs whose configurations change more each epoch end lower: rho = -1 for both metrics, and
    the metrics are those of the definitions (novelty_reference, switches_reference)."""
    from types import SimpleNamespace

    from ntaylor_lib.exploration.configurations import pack_bits
    from ntaylor_lib.exploration.metrics import novelty_reference, switches_reference

    rng = np.random.default_rng(0)
    probes, units, epochs = 6, 20, 4
    runs, expected = {}, []
    for k, flips in enumerate((0.02, 0.1, 0.3)):
        configs = [rng.random((probes, units)) < 0.5]
        for _ in range(epochs):
            configs.append(configs[-1] ^ (rng.random((probes, units)) < flips))
        configs = np.stack(configs)
        arrays = {"configurations/packed": pack_bits(configs), "configurations/epoch_end": np.arange(epochs + 1),
                  "configurations/units": np.asarray(units)}
        runs[f"run {k}"] = SimpleNamespace(arrays=arrays, status="complete", config=SimpleNamespace(epochs=epochs),
                                           round_loss=np.full(epochs * 3, 1.0 - flips))
        expected.append((np.nanmean(novelty_reference(configs)[1:]), np.mean(switches_reference(configs))))
    (row,) = beyond.book_run_correlations({"autoencoder": runs})
    assert row["runs"] == 3 and row["rho(loss, novelty)"] == pytest.approx(-1.0)
    assert row["rho(loss, switches)"] == pytest.approx(-1.0)
    assert np.all(np.diff([e[0] for e in expected]) > 0)  # the fixture ranks as intended


def test_stored_exploration_runs_finds_only_runs_the_store_holds(tmp_path):
    from ntaylor_lib.paper import experiments
    from ntaylor_lib.runs.profiles import get_profile
    from ntaylor_lib.runs.store import RunStore

    params = get_profile("smoke", {"epochs": 1, "train_size": 64, "eval_size": 32, "probe_size": 16})
    store = RunStore(tmp_path)
    assert experiments.stored_exploration_runs(params, "autoencoder", store) == {}  # nothing trained here
    rate = params["exploration_sgd_rates"][0]
    experiments.standard_run(params, "autoencoder", "sgd", lr=rate, taylor=False, store=store, progress=False)
    found = experiments.stored_exploration_runs(params, "autoencoder", store)
    assert list(found) == [experiments.exploration_label("sgd", rate)]
