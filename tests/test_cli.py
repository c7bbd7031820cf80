"""The command line: bad values fail before training, runs train once, the core imports without the book's packages."""

from __future__ import annotations

import subprocess
import sys

from ntaylor_lib.cli import main


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
        "import ntaylor_lib, ntaylor_lib.cli, ntaylor_lib.runs.store, ntaylor_lib.runs.training\n"
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
