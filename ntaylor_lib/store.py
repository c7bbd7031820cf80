"""The run store: every training run keyed by a hash of its full configuration.

Layout, under a results root (``$NTAYLOR_RESULTS``, else ``results/`` in the checkout)::

    runs/<key>/manifest.json   configuration, profile, versions, device, seed, commit, wall time, status
    runs/<key>/arrays.npz      per-round and per-epoch records, and each recorder's arrays
    runs/<key>/model.pt        final weights
    runs/<key>/checkpoint.pt   while running: the last finished epoch, to resume from

Every file is written to a temporary name and renamed, so an interrupted write never
leaves a half file; asking again for a stored configuration loads it instead of training.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .training import History, Recorder, RunConfig, TrainResult, train

# Bumped when stored arrays change meaning, so old results are not silently reused.
STORE_FORMAT = 1


def default_results_root() -> Path:
    env = os.environ.get("NTAYLOR_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "results"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_save_torch(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_npz(arrays: Mapping[str, np.ndarray], path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_save_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def json_digest(obj: Any, length: int, default: Any = None) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``obj`` as sorted-key JSON (``default`` as in ``json.dumps``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest()[:length]


def run_key(config: RunConfig, recorders: Sequence[Recorder] = ()) -> str:
    """Hash of the configuration, the recorders' specs and the store format."""
    payload = {
        "format": STORE_FORMAT,
        "config": config.to_dict(),
        "recorders": [{"name": r.name, **r.spec()} for r in recorders],
    }
    return json_digest(payload, 16)


def git_commit() -> str:
    """The checkout's commit (with ``+dirty`` when it has local changes), or ``unknown``."""
    top = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(top), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(top), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware that a result depends on."""
    from . import __version__

    if device == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return {
        "ntaylor_lib": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device_name": name,
        "git_commit": git_commit(),
    }


@dataclass
class Run:
    """A stored run: its manifest and arrays (loaded on first use)."""

    path: Path
    manifest: dict[str, Any]
    _arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.manifest["config"])

    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            with np.load(self.path / "arrays.npz") as stored:
                self._arrays = {k: stored[k] for k in stored.files}
        return self._arrays

    @property
    def round_loss(self) -> np.ndarray:
        return self.arrays["round_loss"]

    def epoch_table(self) -> list[dict[str, float]]:
        """Per-epoch records as rows ``{"epoch": e, "train_loss": ..., ...}`` (epoch 0: before training)."""
        columns = {k[len("epoch_"):]: v for k, v in self.arrays.items() if k.startswith("epoch_") and k != "epoch_time"}
        n = min((len(v) for v in columns.values()), default=0)
        return [{"epoch": e, **{k: float(v[e]) for k, v in columns.items()}} for e in range(n)]

    def model_state(self) -> dict[str, torch.Tensor]:
        return torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)


class RunStore:
    """Trains a configuration once and serves it from disk afterwards.

    Args:
        root: results root (default :func:`default_results_root`).
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_results_root()

    def run_dir(self, key: str) -> Path:
        return self.root / "runs" / key

    def load(self, key: str) -> Run | None:
        """The finished run stored under ``key``, or ``None``."""
        manifest = self.run_dir(key) / "manifest.json"
        if not manifest.is_file():
            return None
        return Run(self.run_dir(key), json.loads(manifest.read_text()))

    def runs(self) -> Iterator[Run]:
        for path in sorted((self.root / "runs").glob("*/manifest.json")):
            run = self.load(path.parent.name)
            if run is not None:
                yield run

    @contextmanager
    def _lock(self, folder: Path) -> Iterator[None]:
        """Exclusive lock on a run folder, so two processes never train the same run at once."""
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get(
        self,
        config: RunConfig,
        recorders: Sequence[Recorder] = (),
        profile: str | None = None,
        progress: bool | None = None,
    ) -> Run:
        """Load ``config``'s run if stored; otherwise train it (resuming a checkpoint) and store it.

        Args:
            config: the run.
            recorders: their specs join the key and their arrays are stored with the run.
            profile: the profile name, recorded in the manifest.
            progress: show a progress bar while training.
        """
        key = run_key(config, recorders)
        stored = self.load(key)
        if stored is not None:
            return stored
        folder = self.run_dir(key)
        with self._lock(folder):
            stored = self.load(key)  # another process may have finished it while we waited
            if stored is not None:
                return stored
            ckpt_path = folder / "checkpoint.pt"
            resume = torch.load(ckpt_path, map_location=config.device, weights_only=False) if ckpt_path.is_file() else None
            result: TrainResult = train(
                config,
                recorders=recorders,
                progress=progress,
                checkpoint=lambda state: atomic_save_torch(state, ckpt_path),
                resume=resume,
            )
            arrays = result.history.arrays()
            for recorder in recorders:
                arrays.update({f"{recorder.name}/{k}": v for k, v in recorder.arrays().items()})
            atomic_save_npz(arrays, folder / "arrays.npz")
            atomic_save_torch({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, folder / "model.pt")
            manifest = {
                "key": key,
                "config": config.to_dict(),
                "recorders": [{"name": r.name, **r.spec()} for r in recorders],
                "profile": profile,
                "seed": config.seed,
                "status": result.status,
                "rounds": len(result.history.round_loss),
                "wall_time_s": result.wall_time,
                "resumed_from_epoch": None if resume is None else resume["epoch"],
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "environment": environment(config.device),
            }
            atomic_save_json(manifest, folder / "manifest.json")
            ckpt_path.unlink(missing_ok=True)
        return Run(folder, manifest)


__all__ = ["Run", "RunStore", "run_key", "History", "default_results_root"]
