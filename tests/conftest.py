"""Shared fixtures: MNIST prepared once (idempotent, md5-checked), tiny run configurations."""

from __future__ import annotations

import os

import pytest
import torch

# Tests measure numbers, not speed: keep them on the CPU and deterministic.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def results_away_from_the_checkout(tmp_path_factory):
    """Runs, claim records and builds of the tests go to a temporary folder, never the checkout's
    results/ and _build/ (a test that needs its own sets its own)."""
    saved = {k: os.environ.get(k) for k in ("NTAYLOR_RESULTS", "NTAYLOR_BUILD")}
    os.environ["NTAYLOR_RESULTS"] = str(tmp_path_factory.mktemp("results"))
    os.environ["NTAYLOR_BUILD"] = str(tmp_path_factory.mktemp("build"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mnist_root():
    from ntaylor_lib.runs.data import default_data_root, prepare_mnist

    return prepare_mnist(default_data_root(), verbose=False)


@pytest.fixture
def tiny_params():
    """A profile small enough that a run takes well under a second."""
    from ntaylor_lib.runs.profiles import get_profile

    return get_profile("smoke", {"epochs": 3, "train_size": 512, "eval_size": 128, "probe_size": 16,
                                 "convnet_width": 4})
