"""Profiles and the command line: every bad parameter fails before training, naming the valid choices."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ntaylor_lib.cli import main
from ntaylor_lib.profiles import PROFILE_NAMES, ParameterError, get_profile, parse_assignments
from ntaylor_lib.training import run_config


def test_profiles_exist_and_overrides_are_typed():
    for name in PROFILE_NAMES:
        assert get_profile(name)["profile"] == name
    params = get_profile("smoke", {"epochs": "3", "lr_convnet_sgd": "0.5", "convnet_dataset": "mnist"})
    assert params["epochs"] == 3 and params["lr_convnet_sgd"] == 0.5
    with pytest.raises(TypeError):
        params["epochs"] = 4  # read-only: a page cannot silently change its profile


@pytest.mark.parametrize(
    "name,overrides,message",
    [
        ("laptop", {}, "valid profiles: smoke, cpu, paper"),
        ("smoke", {"epoch": 2}, "valid parameters:.*epochs"),
        ("smoke", {"lr_autoencoder_adam": 0}, "must be > 0"),
        ("smoke", {"lr_convnet_sgd": -0.1}, "must be > 0"),
        ("smoke", {"batch_convnet": 0}, "must be >= 1"),
        ("smoke", {"epochs": 0}, "epochs=0 must be >= 1"),
        ("smoke", {"epochs": "two"}, "needs a int"),
        ("smoke", {"convnet_dataset": "svhn"}, "mnist, cifar10"),
        ("smoke", {"device": "tpu"}, "auto, cpu, cuda"),
        ("smoke", {"taylor_box_scales": "1,-2"}, "must be > 0"),
        ("smoke", {"taylor_round_stride": 0}, "must be >= 1"),
        ("smoke", {"exploration_sgd_rates": "fast"}, "comma-separated"),
    ],
)
def test_bad_parameters_list_valid_choices(name, overrides, message):
    with pytest.raises(ParameterError, match=message):
        get_profile(name, overrides)


def test_unknown_optimizer_and_missing_cifar(tmp_path, monkeypatch):
    params = get_profile("smoke")
    with pytest.raises(ParameterError, match="sgd, rmsprop, adam"):
        run_config(params, "autoencoder", "adagrad")
    with pytest.raises(ParameterError, match="autoencoder, convnet"):
        run_config(params, "gan", "sgd")
    monkeypatch.setenv("NTAYLOR_DATA", str(tmp_path))
    with pytest.raises(ParameterError, match="cifar-10-batches-py"):
        run_config(get_profile("smoke", {"convnet_dataset": "cifar10"}), "convnet", "sgd")


def test_parse_assignments():
    assert parse_assignments(["a=1", "b = x"]) == {"a": "1", "b": "x"}
    with pytest.raises(ParameterError, match="key=value"):
        parse_assignments(["novalue"])


def test_cli_rejects_bad_values_before_training(capsys, tmp_path):
    assert main(["run", "--task", "autoencoder", "--optimizer", "sgd", "--profile", "smoke",
                 "--set", "epochs=0", "--results", str(tmp_path)]) == 2
    assert "epochs=0 must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_cli_run_trains_then_loads(mnist_root, tmp_path, capsys):
    args = ["run", "--task", "autoencoder", "--optimizer", "adam", "--profile", "smoke", "--no-progress",
            "--set", "epochs=1", "--set", "train_size=256", "--results", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "complete run" in out and str(tmp_path) in out
    assert main(args) == 0
    assert capsys.readouterr().out == out


def test_help_documents_commands():
    done = subprocess.run([sys.executable, "-m", "ntaylor_lib", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("data", "run", "book"):
        assert command in done.stdout
    done = subprocess.run([sys.executable, "-m", "ntaylor_lib", "run", "--help"], capture_output=True, text=True)
    assert "--set KEY=VALUE" in done.stdout and "--profile" in done.stdout


def test_core_imports_without_book_packages():
    """The core runs on a CUDA machine whose Python has only torch, torchvision, numpy, scipy and tqdm."""
    code = (
        "import sys\n"
        "for name in ('altair', 'papermill', 'jupytext', 'IPython', 'myst_nb', 'vl_convert', 'yaml', 'pandas'):\n"
        "    sys.modules[name] = None\n"
        "import ntaylor_lib, ntaylor_lib.cli, ntaylor_lib.store, ntaylor_lib.training\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_book_command_checks_device_and_data_before_any_chapter(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NTAYLOR_DATA", str(tmp_path))
    monkeypatch.setenv("NTAYLOR_BUILD", str(tmp_path / "out"))
    assert main(["book", "--profile", "smoke", "--set", "convnet_dataset=cifar10"]) == 2
    assert "cifar-10-batches-py" in capsys.readouterr().err
    assert not (tmp_path / "out" / "_build").exists()
