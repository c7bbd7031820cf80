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
import json
import pickle
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig
from .files import atomic_save_json, atomic_save_npz, atomic_save_torch, default_results_root, environment, json_digest
from .recorder import Recorder
from .training import TrainResult, train

# Bumped when stored arrays change meaning, so old results are not silently reused.
STORE_FORMAT = 1


def run_key(config: RunConfig, recorders: Sequence[Recorder] = ()) -> str:
    """Hash of the configuration, the recorders' specs and the store format."""
    payload = {
        "format": STORE_FORMAT,
        "config": config.to_dict(),
        "recorders": [{"name": r.name, **r.spec()} for r in recorders],
    }
    return json_digest(payload, 16)


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
            resume = _read_checkpoint(ckpt_path, config.device)
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


def _read_checkpoint(path: Path, device: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` to resume from, or ``None`` to train from the start.

    Checkpoints hold tensors and plain containers only and are read with
    ``weights_only=True``, so a file planted in a store cannot run code. One that cannot
    be read (cut off, or written by a version of the library that pickled its own
    classes) is only a cache: it is set aside with a note and the run starts over.
    """
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        print(f"[store] {path} cannot be resumed from ({type(error).__name__}); training {path.parent.name} "
              "again from its start", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None


__all__ = ["Run", "RunStore", "run_key"]
