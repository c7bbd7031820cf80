"""benchmarks/gpu_check.py: the GPU check runs with torch and numpy alone, on the data bundle.

The check runs here on the CPU in its tiny mode, in a Python whose import machinery
refuses the book's packages (and torchvision and tqdm, which the GPU machine may lack),
as it must on a bare CUDA machine; the bundle must hold exactly what the library loads.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BOOK_PACKAGES = ("altair", "papermill", "jupytext", "nbformat", "myst_nb", "jupyter_book", "sphinx", "yaml",
                 "vl_convert")
# A finder first on sys.meta_path that makes packages look absent: importing one raises
# ModuleNotFoundError, and importlib.util.find_spec gives a spec without origin (as torch's
# own probes of optional packages expect: they must not see an exception there).
BLOCKER = '''
import importlib.abc, importlib.machinery, sys
BLOCKED = {blocked!r}

class _Absent(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {{spec.name!r}} (blocked: the GPU machine has no such package)",
                                  name=spec.name)

    def exec_module(self, module):
        pass

class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, _Absent())
        return None

sys.meta_path.insert(0, _Refuse())
'''


def _blocked_env(tmp: Path, blocked: tuple[str, ...]) -> dict[str, str]:
    """An environment whose Python refuses to import ``blocked`` (a sitecustomize first on the path)."""
    folder = tmp / "blocker"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(blocked)))
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH")}
    env.update(PYTHONPATH=f"{folder}{os.pathsep}{REPO}", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


@pytest.fixture(scope="module")
def bundle(mnist_root, tmp_path_factory):
    from ntaylor_lib.runs.data import write_gpu_bundle

    folder = tmp_path_factory.mktemp("gpu_bundle")
    sizes = write_gpu_bundle(mnist_root, folder=folder, verbose=False)
    return folder, sizes


def test_bundle_round_trips_to_the_library_arrays(bundle, mnist_root):
    from ntaylor_lib.runs.data import load_arrays, load_gpu_bundle

    folder, sizes = bundle
    assert "mnist.pt.gz" in sizes and sizes["mnist.pt.gz"] < 32 * 2**20  # travels within a 64 MiB carry
    loaded, expected = load_gpu_bundle("mnist", folder), load_arrays("mnist", mnist_root)
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    assert load_gpu_bundle("cifar10", folder / "nowhere") is None


def test_task_data_from_arrays_matches_task_data(mnist_root):
    from ntaylor_lib.runs.data import load_arrays, task_data, task_data_from_arrays

    args = ("convnet", "mnist", 300, 50, 20)
    a, b = task_data(*args, root=mnist_root), task_data_from_arrays(load_arrays("mnist", mnist_root), *args)
    for field in ("train_x", "train_y", "test_x", "probe_x"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_recorders_import_without_scipy(tmp_path):
    env = _blocked_env(tmp_path, BOOK_PACKAGES + ("scipy", "tqdm", "torchvision"))
    code = (
        "import ntaylor_lib.paper.experiments, ntaylor_lib.taylor.recorders, ntaylor_lib.taylor.solver\n"
        "try:\n    import scipy\nexcept ImportError:\n    print('recorders imported; scipy absent')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "recorders imported; scipy absent" in done.stdout, done.stderr[-2000:]


def test_gpu_check_tiny_on_cpu_without_the_book_packages(bundle, tmp_path):
    folder, _ = bundle
    out = tmp_path / "gpu_check.json"
    env = _blocked_env(tmp_path, BOOK_PACKAGES + ("torchvision", "tqdm"))
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
         "--bundle", str(folder), "--json", str(out), "--max-seconds", "300", "--solve-neurons", "1"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "tqdm is missing" in " ".join(result["notes"])
    assert set(result["cases"]) == {"autoencoder/mnist", "convnet/mnist", "convnet/cifar10"}
    for key, case in result["cases"].items():
        assert set(case["epoch_s"]) == {"bare", "explore", "taylor", "all"}
        assert all(t > 0 and math.isfinite(t) for t in case["epoch_s"].values()), key
        assert case["overhead_ratio"] == pytest.approx(case["epoch_s"]["all"] / case["epoch_s"]["bare"])
        assert case["overhead_ratio"] > 0.5, key  # recorders cannot halve an epoch; timing noise aside
        assert case["taylor_ratio"] == pytest.approx(case["epoch_s"]["taylor"] / case["epoch_s"]["bare"])
        assert case["taylor_ratio"] > 0.5, key
        assert case["solve_s_per_horizon"] > 0, key
        assert case["peak_gpu_bytes"] is None  # the CPU has none
        assert case["recorder_state_bytes_per_epoch"] > 0
        assert case["rounds_per_epoch"] == 1280 // case["batch"]
    assert result["cases"]["convnet/cifar10"]["source"].startswith("random")
    assert "line" in " ".join(result["notes"]) or all(c["mode"].startswith("full") for c in result["cases"].values())

    # The projection is the stated formula applied to the cases, recomputed here independently.
    projection = result["projection"]["paper"]
    epochs, n_runs = projection["epochs"], 3
    # the paper profile's log:12 schedule: 12 epochs spaced geometrically from the first to the last, rounded
    schedule = sorted({int(e) for e in np.rint(np.geomspace(1, epochs, 12))} | {1, epochs})
    assert projection["horizon_epochs"] == schedule and len(schedule) < epochs
    expected = 0.0
    for task, key in (("autoencoder", "autoencoder/mnist"), ("convnet", "convnet/cifar10")):
        case, row = result["cases"][key], projection["per_task"][task]
        horizons = len(schedule) if task == "autoencoder" else sum(schedule)  # a CE horizon e costs e first ones
        solve = n_runs * case["solve_s_per_horizon"] * horizons
        train = n_runs * epochs * case["epoch_s"]["all"] + row["exploration_runs"] * epochs * case["epoch_s"]["explore"]
        assert row["solve_s"] == pytest.approx(solve) and row["training_s"] == pytest.approx(train)
        assert row["tuning_s"] >= 0
        expected += solve + train + row["tuning_s"]
    assert projection["complete"] and projection["total_s"] == pytest.approx(expected) and expected > 0
    assert "projection (paper" in done.stdout and "formula:" in done.stdout


@pytest.fixture
def gpu_check(monkeypatch):
    """benchmarks/gpu_check.py as a module, run in-process; its JSON goes where the test says."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.delenv("OUT", raising=False)
    import gpu_check

    return gpu_check


def test_gpu_check_reports_the_other_cases_when_one_breaks(gpu_check, bundle, tmp_path, monkeypatch, capsys):
    """One GPU lease is one try: a case that raises is reported, and the others still run."""
    folder, _ = bundle
    real = gpu_check.measure_slices

    def breaks_on_cifar(task, dataset, *args, **kwargs):
        if dataset == "cifar10":
            raise RuntimeError("planted failure")
        return real(task, dataset, *args, **kwargs)

    monkeypatch.setattr(gpu_check, "measure_slices", breaks_on_cifar)
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--device", "cpu", "--tiny", "--bundle", str(folder), "--json", str(out),
                           "--no-solve", "--no-full-epoch"])
    assert code == 1
    result = json.loads(out.read_text())
    assert set(result["cases"]) == {"autoencoder/mnist", "convnet/mnist"}
    assert result["failed"]["convnet/cifar10"]["error"] == "RuntimeError: planted failure"
    assert "convnet/cifar10 FAILED: RuntimeError: planted failure" in result["notes"]
    # the paper projection needs the CIFAR-sized convnet; the MNIST-sized one stands
    assert set(result["projection"]) == {"convnet_dataset=mnist"}
    printed = capsys.readouterr()
    assert "planted failure" in printed.err and "sliced autoencoder/mnist" in printed.out


def test_gpu_check_measures_only_the_chosen_case(gpu_check, bundle, tmp_path):
    folder, _ = bundle
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--device", "cpu", "--tiny", "--bundle", str(folder), "--json", str(out),
                           "--case", "autoencoder/mnist", "--no-full-epoch", "--solve-neurons", "1"])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["cases"]) == {"autoencoder/mnist"} and result["projection"] == {} and not result["failed"]
    detail = result["cases"]["autoencoder/mnist"]["solve_detail"]["groups"]
    # every neuron group solved its first neuron only, its time scaled to the group's neurons
    neuron_groups = [g for g in detail if not g["joint"]]
    assert neuron_groups and all(g["solved"] == 1 and g["seconds"] == pytest.approx(g["seconds_solved"] * g["scales"])
                                 for g in neuron_groups)
