"""The run store: every training run keyed by a hash of its full configuration.

Layout, under a results root (``$NTAYLOR_RESULTS``, else ``results/`` in the checkout)::

    runs/<key>/manifest.json   configuration, profile, versions, device, seed, commit, wall time, status,
                               and the SHA-256 of every other file of the run
    runs/<key>/arrays.npz      per-round and per-epoch records, and each recorder's arrays
    runs/<key>/model.pt        final weights
    runs/<key>/checkpoint.pt   while running: a finished epoch to resume from (every epoch, or spaced so
                               that writing it costs at most about 5% of the training: CHECKPOINT_SPACING)
    runs/<key>/.lock           held while a process trains the run (its pid inside)

Every file is written to a temporary name and renamed, so an interrupted write never
leaves a half file (leftover temporary files are removed on the next access); asking again
for a stored configuration loads it instead of training. A stored run is served only if
its manifest reads and every file it lists is there with its SHA-256: otherwise the store
stops with a :class:`StoreError` that names the run, its folder and the fix, or, with
``repair`` (``--repair``, ``NTAYLOR_REPAIR=1``), trains it again. Checkpoints are a cache:
one that cannot be read, or belongs to another run, is set aside with a note. Nothing in
the store is unpickled beyond tensors and plain containers (``weights_only=True``,
``np.load`` without pickles).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
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
from .data import DATA_MD5
from .files import (
    TEMPORARY,
    atomic_save_json,
    atomic_save_npz,
    atomic_save_torch,
    default_results_root,
    environment,
    file_digest,
    json_digest,
)
from .recorder import Recorder
from .training import TrainResult, train

# Bumped when stored files change meaning or layout, so old results are not silently reused.
STORE_FORMAT = 2
#: The files a finished run lists in its manifest with their SHA-256.
STORED_FILES = ("arrays.npz", "model.pt")
#: Training time between checkpoints, in multiples of the last checkpoint's writing time: at most
#: about 1 / 20 of a run goes to checkpoints, and an interruption loses at most about 20 writes' time.
CHECKPOINT_SPACING = 20.0


class StoreError(RuntimeError):
    """A stored run that cannot be served (damaged, incomplete, or not its own); the message names
    the run, its folder and the fix."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C while a run trained: what was kept, and how to resume, in one line."""

    def __init__(self, key: str, folder: Path, epoch: int | None) -> None:
        kept = f"its checkpoint after epoch {epoch}" if epoch else "nothing (no epoch had finished)"
        super().__init__(f"interrupted: run {key} kept {kept} in {folder}; the same command resumes it")
        self.key, self.folder, self.epoch = key, folder, epoch


def run_key(config: RunConfig, recorders: Sequence[Recorder] = ()) -> str:
    """Hash of the configuration, the data's identity (the md5s of the files the run reads), the
    recorders' specs and the store format."""
    payload = {
        "format": STORE_FORMAT,
        "config": config.to_dict(),
        "data": DATA_MD5[config.dataset],
        "recorders": [{"name": r.name, **r.spec()} for r in recorders],
    }
    return json_digest(payload, 16)


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, checked in this process


def _problem(folder: Path, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """The run's manifest, and what is wrong with the stored run (``None`` when it can be served)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as error:
        return None, f"its manifest.json cannot be read ({type(error).__name__}: {error})"
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        return None, "its manifest.json is not one this version writes"
    missing = [k for k in ("status", "config", "files") if k not in manifest]
    if missing:
        return None, f"its manifest.json lacks {', '.join(missing)}"
    if manifest.get("key") != key:
        return None, f"its manifest.json belongs to run {manifest.get('key')}"
    for name in STORED_FILES:
        listed, path = manifest["files"].get(name) or {}, folder / name
        try:
            stat = path.stat()
        except OSError:
            return manifest, f"{name} is missing"
        seen = (str(path), stat.st_size, stat.st_mtime_ns)
        if seen not in _VERIFIED:
            if stat.st_size != listed.get("bytes"):
                return manifest, f"{name} has {stat.st_size} bytes, the manifest lists {listed.get('bytes')}"
            try:
                _VERIFIED[seen] = file_digest(path)
            except OSError as error:
                return manifest, f"{name} cannot be read ({error})"
        if _VERIFIED[seen] != listed.get("sha256"):
            return manifest, f"{name} is not the file its manifest lists (SHA-256 differs)"
    return manifest, None


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
        repair: train a damaged stored run again instead of stopping (default: ``$NTAYLOR_REPAIR`` is ``1``).
    """

    def __init__(self, root: Path | str | None = None, repair: bool | None = None) -> None:
        self.root = Path(root) if root is not None else default_results_root()
        self.repair = os.environ.get("NTAYLOR_REPAIR") == "1" if repair is None else repair

    def run_dir(self, key: str) -> Path:
        return self.root / "runs" / key

    def load(self, key: str) -> Run | None:
        """The finished run stored under ``key``, or ``None``.

        Raises:
            StoreError: the run's folder holds a manifest but the run cannot be served (see
                :class:`StoreError`); with ``repair``, its files are removed and ``None`` returned.
        """
        folder = self.run_dir(key)
        if not (folder / "manifest.json").exists():
            return None
        manifest, problem = _problem(folder, key)
        if problem is None:
            return Run(folder, manifest)
        if self.repair:
            print(f"[store] run {key} in {folder}: {problem}; training it again (repair)", file=sys.stderr)
            for name in ("manifest.json", *STORED_FILES):
                (folder / name).unlink(missing_ok=True)
            return None
        raise StoreError(f"run {key} in {folder}: {problem}. Rerun with --repair (or NTAYLOR_REPAIR=1) to train "
                         "it again, or delete that folder")

    def runs(self) -> Iterator[Run]:
        for path in sorted((self.root / "runs").glob("*/manifest.json")):
            run = self.load(path.parent.name)
            if run is not None:
                yield run

    @contextmanager
    def _lock(self, folder: Path) -> Iterator[None]:
        """Exclusive lock on a run folder, so two processes never train the same run at once.

        The lock is the kernel's (``flock``): a process that dies releases it. The holder's pid
        is written in the file, so that the next holder can say whose work it takes over, and
        temporary files left by a writer that died are removed. If nothing is left in the
        folder when the lock is released (a run that failed before its first checkpoint), the
        folder goes too.
        """
        handle = self._acquire(folder)
        with handle:
            try:
                handle.seek(0)
                before = handle.read().strip()
                leftovers = sorted(folder.glob(TEMPORARY))
                if before.isdigit() and int(before) != os.getpid() and not _alive(int(before)) and (
                        leftovers or (folder / "checkpoint.pt").exists()):
                    print(f"[store] run {folder.name}: taking over from process {before}, which is gone",
                          file=sys.stderr)
                for path in leftovers:  # a writer that died between writing and renaming
                    path.unlink(missing_ok=True)
                handle.seek(0)
                handle.truncate()
                handle.write(str(os.getpid()))
                handle.flush()
                yield
            finally:
                if not any(p.name != ".lock" for p in folder.iterdir()):
                    # nothing was kept (a run that failed or was cut off before its first checkpoint):
                    # no empty folder stays behind; a process waiting on this lock opens it anew
                    (folder / ".lock").unlink(missing_ok=True)
                    try:
                        folder.rmdir()
                    except OSError:
                        pass
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _acquire(self, folder: Path):
        """The run folder's lock file, opened and locked; retried if the holder removed it meanwhile."""
        while True:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                handle = open(folder / ".lock", "a+")
            except OSError as error:
                raise StoreError(f"the run store at {self.root} cannot be written ({error.strerror or error}); "
                                 "set NTAYLOR_RESULTS or --results to a writable folder") from None
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if os.fstat(handle.fileno()).st_ino == os.stat(folder / ".lock").st_ino:
                    return handle
            except OSError:  # removed by the holder we waited for
                pass
            handle.close()

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
            resume = _read_checkpoint(ckpt_path, config.device, key)
            saved = [resume["epoch"] if resume else None]
            last = {"at": time.monotonic(), "cost": 0.0}

            def checkpoint(state: dict[str, Any]) -> None:
                # Bounded cost: a checkpoint that took c seconds to write waits CHECKPOINT_SPACING * c
                # seconds of training before the next (the recorders' state can grow to gigabytes: written
                # every epoch it came to dominate a paper-scale run). Small states go every epoch.
                if time.monotonic() - last["at"] < CHECKPOINT_SPACING * last["cost"]:
                    return
                started = time.monotonic()
                atomic_save_torch({**state, "key": key}, ckpt_path)
                last["at"], last["cost"] = time.monotonic(), time.monotonic() - started
                saved[0] = state["epoch"]

            try:
                result: TrainResult = train(config, recorders=recorders, progress=progress, checkpoint=checkpoint,
                                            resume=resume)
            except KeyboardInterrupt:
                raise RunInterrupted(key, folder, saved[0]) from None
            arrays = result.history.arrays()
            for recorder in recorders:
                arrays.update({f"{recorder.name}/{k}": v for k, v in recorder.arrays().items()})
            files = {"arrays.npz": atomic_save_npz(arrays, folder / "arrays.npz"),
                     "model.pt": atomic_save_torch({k: v.detach().cpu() for k, v in result.model.state_dict().items()},
                                                   folder / "model.pt")}
            manifest = {
                "format": STORE_FORMAT,
                "files": files,
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


def _read_checkpoint(path: Path, device: str, key: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` to resume from, or ``None`` to train from the start.

    Checkpoints hold tensors and plain containers only and are read with
    ``weights_only=True``, so a file planted in a store cannot run code. One that cannot
    be read (cut off, garbage, or written by a version of the library that pickled its own
    classes) or that belongs to another run is only a cache: it is set aside with a note
    and the run starts over.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        problem = None if isinstance(state, dict) and state.get("key") == key else "it belongs to another run"
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        problem = f"{type(error).__name__}"
    if problem is None:
        return state
    print(f"[store] {path} cannot be resumed from ({problem}); training {path.parent.name} again from its start",
          file=sys.stderr)
    path.unlink(missing_ok=True)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM  # alive, another user's
    return True


__all__ = ["Run", "RunInterrupted", "RunStore", "StoreError", "run_key"]
