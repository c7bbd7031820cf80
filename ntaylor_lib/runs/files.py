"""Files the runs and results are kept in: atomic writes, content digests, provenance.

Every file is written to a temporary name in its folder, flushed to disk and renamed,
so an interrupted write never leaves a half file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__

#: The checkout (or installed source tree) this package lives in.
ROOT = Path(__file__).resolve().parents[2]


def default_results_root() -> Path:
    env = os.environ.get("NTAYLOR_RESULTS")
    return Path(env) if env else ROOT / "results"


#: Temporary files of :func:`atomic_write_bytes`: ``.<name>.<pid>.tmp`` beside their target.
TEMPORARY = ".*.*.tmp"


def atomic_write_bytes(path: Path, payload: bytes) -> dict[str, Any]:
    """Write ``payload`` to ``path`` via a temporary file in the same folder and a rename.

    Returns ``{"sha256", "bytes"}`` of what was written, for a manifest to list.
    """
    return _atomic_write(path, lambda handle: handle.write(payload))


class _HashingWriter(io.RawIOBase):
    """A file that hashes what is written to it, on its way to disk."""

    def __init__(self, handle) -> None:
        super().__init__()
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += view.nbytes
        return self.handle.write(view)


def atomic_save_torch(obj: Any, path: Path) -> dict[str, Any]:
    """:func:`torch.save` of ``obj`` to ``path`` atomically, as :func:`atomic_write_bytes` writes.

    Streamed to the temporary file and hashed on the way, never held in memory whole: a
    paper-scale checkpoint holds gigabytes of recorder state, and a buffer of it (grown by
    copies, then copied out) cost about three times that, which a process that keeps its
    freed memory (:mod:`ntaylor_lib.runs.allocator`) kept for good at every larger checkpoint.
    """
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def _atomic_write(path: Path, fill: Callable[[_HashingWriter], Any]) -> dict[str, Any]:
    """``fill`` writes the content to a temporary file in ``path``'s folder, hashed on the way; it is
    flushed to disk and renamed onto ``path``. Returns ``{"sha256", "bytes"}`` of what was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        writer = _HashingWriter(handle)
        fill(writer)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return {"sha256": writer.digest.hexdigest(), "bytes": writer.size}


def atomic_save_npz(arrays: Mapping[str, np.ndarray], path: Path) -> dict[str, Any]:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_save_json(obj: Any, path: Path) -> dict[str, Any]:
    return atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content (``sha256``, ``md5``, ...), read in blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def writable_folder(path: Path, what: str) -> Path:
    """``path`` as a folder that can be written, created if missing; else a ``ValueError`` naming ``what``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be created ({error.strerror or error})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} is not writable")
    return path


def json_digest(obj: Any, length: int, default: Any = None) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``obj`` as sorted-key JSON (``default`` as in
    ``json.dumps``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest()[:length]


def git_commit() -> str:
    """The checkout's commit (with ``+dirty`` when it has local changes), or ``unknown``."""
    top = ROOT
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
