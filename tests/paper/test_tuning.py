"""Learning-rate tuning: the rule, where the choices are stored and read, and one small sweep end to end."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from ntaylor_lib import cli
from ntaylor_lib.cli import main
from ntaylor_lib.paper import tuning
from ntaylor_lib.paper.experiments import experiment_config
from ntaylor_lib.paper.tuning import tuning_rates
from ntaylor_lib.runs.profiles import OPTIMIZERS, TASKS, ParameterError, get_profile
from ntaylor_lib.runs.store import RunStore, run_key
from ntaylor_lib.site.book import toc_files

HAVE_SWEEP = importlib.util.find_spec("ntaylor_lib.sweep") is not None


def _row(lr, loss, diverged=False, status="ok", task="autoencoder", optimizer="sgd"):
    return {"task": task, "optimizer": optimizer, "lr": lr, "final_train_loss": loss, "diverged": diverged,
            "status": status}


def test_rule_picks_lowest_final_loss():
    rows = [_row(0.01, 0.30), _row(0.1, 0.12), _row(1.0, 0.25)]
    assert tuning.pick_rate(rows) == 0.1
    assert tuning.pick_rate(list(reversed(rows))) == 0.1  # order of the rows does not matter


def test_rule_never_picks_diverged_nonfinite_or_failed_runs():
    rows = [_row(0.01, 0.5), _row(0.1, 0.01, diverged=True), _row(0.3, float("nan")), _row(1.0, float("inf")),
            _row(3.0, 0.001, status="failed"), _row(10.0, "nan")]
    assert tuning.pick_rate(rows) == 0.01
    assert tuning.pick_rate(rows[1:]) is None
    # The notebook's text outputs: glued values may come back as strings.
    assert tuning.pick_rate([_row(0.1, "0.2", diverged="False"), _row(0.2, "0.3", diverged="True")]) == 0.1


def test_rule_ties_go_to_the_smaller_rate():
    assert tuning.pick_rate([_row(0.3, 0.2), _row(0.1, 0.2), _row(1.0, 0.4)]) == 0.1


def test_grid_edges_are_flagged():
    grid = [0.01, 0.1, 1.0]
    assert tuning.grid_edge(0.01, grid) == "lowest"
    assert tuning.grid_edge(1.0, grid) == "highest"
    assert tuning.grid_edge(0.1, grid) == ""
    assert tuning.grid_edge(0.1, [0.1]) == "only"
    assert tuning.grid_edge(None, grid) == ""


def test_profiles_hold_the_tuning_keys():
    assert get_profile("smoke")["lr_source"] == "fixed"
    for name in ("cpu", "paper"):
        params = get_profile(name)
        assert params["lr_source"] == "tuned"
        assert params["tuning_epochs"] >= 1
        for opt in OPTIMIZERS:
            assert len(tuning_rates(params, opt)) >= 2
    cpu = get_profile("cpu")  # the cpu grid includes the hand-picked rates
    for task in TASKS:
        for opt in OPTIMIZERS:
            assert cpu[f"lr_{task}_{opt}"] in tuning_rates(cpu, opt)
    for bad, message in [({"lr_source": "best"}, "fixed, tuned"), ({"tuning_rates_adam": "0.1,x"}, "comma-separated"),
                         ({"tuning_rates_sgd": "0.1,-1"}, "> 0"), ({"tuning_epochs": 0}, "tuning_epochs")]:
        with pytest.raises(ParameterError, match=message):
            get_profile("smoke", bad)


def _synthetic_rows(params):
    """A sweep table whose winner is known: loss (log10 lr - log10 best)^2 + 0.1, the best rate per optimizer."""
    best = {opt: tuning_rates(params, opt)[-1] for opt in OPTIMIZERS}
    return [_row(lr, (math.log10(lr) - math.log10(best[opt])) ** 2 + 0.1, task=task, optimizer=opt)
            for task in TASKS for opt in OPTIMIZERS for lr in tuning_rates(params, opt)], best


def test_run_config_reads_the_tuned_file_and_an_explicit_rate_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("NTAYLOR_RESULTS", str(tmp_path))
    params = get_profile("smoke", {"lr_source": "tuned", "tuning_rates_sgd": "0.01,0.05,0.2"})
    rows, best = _synthetic_rows(params)
    path = tuning.store_choices(params, rows)
    assert path == tmp_path / "tuning" / "smoke" / "tuned_learning_rates.json"
    stored = json.loads(path.read_text())
    assert stored["rule"] == tuning.RULE and stored["tuning_epochs"] == params["tuning_epochs"]
    assert stored["grid"]["sgd"] == [0.01, 0.05, 0.2] and stored["profile"] == "smoke"
    assert stored["parameters"]["tuning_rates_sgd"] == [0.01, 0.05, 0.2] and stored["overrides"]["lr_source"] == "tuned"
    assert stored["choices"]["convnet"]["sgd"]["edge"] == "highest"
    assert best["sgd"] != params["lr_convnet_sgd"]  # the pick is not the fixed rate
    for task in TASKS:
        for opt in OPTIMIZERS:
            assert experiment_config(params, task, opt).lr == best[opt]
    # A rate set with --set wins over the pick; so does an explicit lr, and lr_source=fixed.
    assert experiment_config(get_profile("smoke", {"lr_source": "tuned", "tuning_rates_sgd": "0.01,0.05,0.2",
                                            "lr_convnet_sgd": 0.123}), "convnet", "sgd").lr == 0.123
    assert experiment_config(params, "convnet", "sgd", lr=0.7).lr == 0.7
    assert experiment_config(get_profile("smoke"), "convnet", "sgd").lr == get_profile("smoke")["lr_convnet_sgd"]


def test_tuned_rates_for_other_settings_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NTAYLOR_RESULTS", str(tmp_path))
    params = get_profile("smoke", {"lr_source": "tuned"})
    tuning.store_choices(params, _synthetic_rows(params)[0])
    with pytest.raises(ParameterError, match="width: 8 then, 16 now.*--only lr_tuning"):
        experiment_config(get_profile("smoke", {"lr_source": "tuned", "convnet_width": 16}), "convnet", "adam")
    with pytest.raises(ParameterError, match="tuning_rates_sgd is now"):
        experiment_config(get_profile("smoke", {"lr_source": "tuned", "tuning_rates_sgd": "0.1,0.2"}),
                          "autoencoder", "sgd")
    # A grid on which every rate diverged leaves no pick: the error says to widen it.
    rows = [_row(lr, 0.1, diverged=opt == "adam", task=t, optimizer=opt)
            for t in TASKS for opt in OPTIMIZERS for lr in tuning_rates(params, opt)]
    tuning.store_choices(params, rows)
    with pytest.raises(ParameterError, match="widen the grid"):
        experiment_config(params, "convnet", "adam")
    assert experiment_config(params, "convnet", "rmsprop").lr == tuning_rates(params, "rmsprop")[0]


def test_missing_tuning_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NTAYLOR_RESULTS", str(tmp_path))
    params = get_profile("smoke", {"lr_source": "tuned"})
    with pytest.raises(ParameterError, match="python -m ntaylor_lib book --only lr_tuning --profile smoke"):
        experiment_config(params, "autoencoder", "adam")
    # The run command reports it and trains nothing.
    assert main(["run", "--task", "autoencoder", "--optimizer", "adam", "--profile", "smoke",
                 "--set", "lr_source=tuned", "--no-progress"]) == 2
    assert "--only lr_tuning" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_book_command_does_not_need_a_tuning_that_it_will_run(tmp_path, monkeypatch, capsys):
    """The book runs the tuning chapter first: its up-front check must not ask for the tuned file."""
    monkeypatch.setenv("NTAYLOR_RESULTS", str(tmp_path))
    calls = []
    monkeypatch.setattr(cli, "build_book", lambda params, only, html: calls.append(only) or 0)
    assert main(["book", "--profile", "smoke", "--set", "lr_source=tuned", "--no-html"]) == 0
    assert main(["book", "--profile", "smoke", "--set", "lr_source=tuned", "--only", "lr_tuning", "--no-html"]) == 0
    assert calls == [[], ["lr_tuning"]]
    # A chapter alone, without the tuning, fails before executing anything, naming the fix.
    assert main(["book", "--profile", "smoke", "--set", "lr_source=tuned", "--only", "figure3", "--no-html"]) == 2
    assert "--only lr_tuning" in capsys.readouterr().err and len(calls) == 2


def test_point_notebook_is_not_a_page():
    assert tuning.POINT_NOTEBOOK.is_file()
    assert "book/lr_tuning" == toc_files()[1]  # first chapter after the root
    assert not any("points" in name for name in toc_files())


@pytest.mark.skipif(not HAVE_SWEEP, reason="ntaylor_lib.sweep (run_sweep) is not in this checkout yet")
def test_tune_learning_rates_end_to_end(tmp_path, monkeypatch, mnist_root):
    """A two-rate sweep of SGD on the autoencoder at the smoke profile, through papermill and the run store."""
    monkeypatch.setenv("NTAYLOR_RESULTS", str(tmp_path))
    params = get_profile("smoke", {"tuning_rates_sgd": "0.01,0.05"})
    rows = tuning.tune_learning_rates(params, workers=2, progress=False, tasks=("autoencoder",), optimizers=("sgd",))
    assert [(r["task"], r["optimizer"], r["lr"]) for r in rows] == [("autoencoder", "sgd", 0.01),
                                                                     ("autoencoder", "sgd", 0.05)]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    # The glued losses are those of the stored runs, and the rule picked the lower one.
    store = RunStore()
    for r in rows:
        run = store.load(run_key(tuning.tuning_config(params, "autoencoder", "sgd", r["lr"])))
        assert run is not None and run.config.epochs == params["tuning_epochs"]
        assert run.config.train_size == params["tuning_train_size"]
        assert r["final_train_loss"] == pytest.approx(tuning.final_train_loss(run), rel=1e-9)
    best = min(rows, key=lambda r: r["final_train_loss"])
    assert [r["picked"] for r in rows] == [r is best for r in rows]
    # Experiments read the pick (with lr_source tuned), and the curves come back from the store.
    tuned = get_profile("smoke", {"tuning_rates_sgd": "0.01,0.05", "lr_source": "tuned"})
    assert experiment_config(tuned, "autoencoder", "sgd").lr == best["lr"]
    with pytest.raises(ParameterError, match="did not sweep convnet/sgd"):
        experiment_config(tuned, "convnet", "sgd")
    curves = tuning.epoch_curves(params, rows)
    assert len(curves) == 2 * params["tuning_epochs"]
    # A rerun executes nothing: every point is read back.
    again = tuning.tune_learning_rates(params, workers=2, progress=False, tasks=("autoencoder",), optimizers=("sgd",))
    assert all(r["reused"] for r in again)
    assert [r["final_train_loss"] for r in again] == [r["final_train_loss"] for r in rows]
