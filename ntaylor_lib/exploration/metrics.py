"""Exploration of activation configurations: the three metrics of Figure 5.

``A`` is the ``N x D x M`` binary tensor of activation configurations (checkpoints x
probe inputs x ReLU units, :mod:`ntaylor_lib.exploration.configurations`), given bit-packed along
units as ``(N, D, ceil(M / 8))`` uint8 with ``M``.

(a) novelty ``h_n = min_{k<n} ||A_n - A_k||_F^2 / (D M)``: normalised Hamming distance
    to the nearest earlier configuration; ``h_0`` is NaN (nothing came before).
(b) switches per probe input ``d``: ``sum_{n<N-1} ||A_{n+1}[d] - A_n[d]||^2 / ((N-1) M)``,
    the fraction of possible activation-state switches it underwent; NaN when ``N = 1``.
(c) log-volume per unit ``m``: ``X_m = A[:, :, m]`` (``N x D``) minus its mean over
    checkpoints (each column), then ``sum_{i<=k} log max(sigma_i(X_m), floor)`` over the
    ``k = min(values, N - 1, D)`` largest singular values (the centred matrix has rank at
    most ``min(N - 1, D)``). **Floor rule**: a singular value below ``floor`` (default
    ``1e-3``) counts as ``floor``, so every unit sums the same number of terms and a unit
    that never changes scores ``k log(floor)``, the lowest possible value. Nonzero
    singular values of a centred 0/1 matrix are rarely that small (one switch of one
    input gives ``sigma >= sqrt((N-1)/N)``), and the fast path resolves them to about
    ``1e-5`` at ``N = 100, D = 1000``; NaN when ``N = 1``.

Switches and volumes are returned sorted, largest first, as the paper plots them.

Fast paths: Hamming distances and switches by popcount of XORed 64-bit words of the packed bits;
singular values as square roots of the eigenvalues of each unit's small centred Gram
matrix (``N x N``, or ``D x D`` when ``D < N``), formed for a chunk of units by one
batched product of exact 0/1 floats and diagonalised by one batched ``eigvalsh``. The
``*_reference`` functions are the definitions written out in NumPy, one pair or one
unit at a time, for tests and benchmarks.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

DEFAULT_VALUES = 50
DEFAULT_FLOOR = 1e-3
_WORDS_PER_BLOCK = 2048  # 64-bit words per row per block: N rows stay in cache


def _as_words(packed: np.ndarray) -> np.ndarray:
    """``(N, D, B)`` uint8 to ``(N, W)`` uint64, zero-padded (popcount ignores the padding)."""
    flat = packed.reshape(packed.shape[0], -1)
    pad = -flat.shape[1] % 8
    if pad:
        flat = np.pad(flat, ((0, 0), (0, pad)))
    return np.ascontiguousarray(flat).view(np.uint64)


def hamming_matrix(packed: np.ndarray) -> np.ndarray:
    """``H[n, k] = ||A_n - A_k||_F^2``, the number of entries where checkpoints differ.

    Args:
        packed: ``(N, D, ceil(M / 8))`` uint8.

    Returns:
        ``(N, N)`` int64, symmetric, zero diagonal.
    """
    words = _as_words(packed)
    n_ckpt = words.shape[0]
    lower = np.zeros((n_ckpt, n_ckpt), dtype=np.int64)
    xor = np.empty((n_ckpt, min(_WORDS_PER_BLOCK, words.shape[1])), dtype=np.uint64)
    counts = np.empty(xor.shape, dtype=np.uint8)
    for start in range(0, words.shape[1], _WORDS_PER_BLOCK):
        block = words[:, start : start + _WORDS_PER_BLOCK]
        width = block.shape[1]
        for n in range(1, n_ckpt):
            np.bitwise_xor(block[:n], block[n], out=xor[:n, :width])
            np.bitwise_count(xor[:n, :width], out=counts[:n, :width])
            lower[n, :n] += counts[:n, :width].sum(axis=1, dtype=np.uint32)
    return lower + lower.T


def novelty(packed: np.ndarray, units: int) -> np.ndarray:
    """Figure 5(a): ``h_n = min_{k<n} ||A_n - A_k||_F^2 / (D M)``; ``h_0 = NaN``. Returns ``(N,)`` float64."""
    n_ckpt, probes = packed.shape[:2]
    distances = hamming_matrix(packed).astype(np.float64)
    distances[np.triu_indices(n_ckpt)] = np.inf  # only earlier checkpoints k < n
    out = distances.min(axis=1) / (probes * units)
    if n_ckpt:
        out[0] = np.nan
    return out


def switches(packed: np.ndarray, units: int, sort: bool = True) -> np.ndarray:
    """Figure 5(b): per probe input, the fraction of possible activation-state switches.

    Returns:
        ``(D,)`` float64, ``sum_n ||A_{n+1}[d] - A_n[d]||^2 / ((N-1) M)``, sorted largest
        first unless ``sort`` is False (then in probe order); all NaN when ``N = 1``.
    """
    n_ckpt, probes, width = packed.shape
    if n_ckpt < 2:
        return np.full(probes, np.nan)
    # XOR bytes into rows padded to whole 64-bit words, so each popcount covers 8 bytes,
    # and add the word counts up over checkpoints before one sum per row at the end.
    words_per_row = -(-width // 8)
    buffer = np.zeros((probes, 8 * words_per_row), dtype=np.uint8)
    words = buffer.view(np.uint64)
    counts = np.empty(words.shape, dtype=np.uint8)
    # a word changes in at most 64 bits per step: uint16 holds 1023 steps
    total = np.zeros(words.shape, dtype=np.uint16 if n_ckpt <= 1024 else np.uint32)
    for n in range(n_ckpt - 1):
        np.bitwise_xor(packed[n + 1], packed[n], out=buffer[:, :width])
        np.bitwise_count(words, out=counts)
        np.add(total, counts, out=total)
    out = total.sum(axis=1, dtype=np.int64) / ((n_ckpt - 1) * units)
    return -np.sort(-out) if sort else out


def subsample_units(units: int, sample: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of the units whose volume is computed: all when ``sample`` is 0/None or
    ``>= units``, else ``sample`` of them drawn without replacement by ``seed`` (sorted)."""
    if not sample or sample >= units:
        return np.arange(units)
    return np.sort(np.random.default_rng(seed).choice(units, size=sample, replace=False))


class _UnitReader:
    """``A[:, :, m]`` for chosen units ``m`` as ``(c, N, D)`` uint8 0/1, a chunk at a time.

    The packed bytes holding the units are transposed once to ``(bytes, N, D)``, so each
    unit's bits come from one contiguous ``N x D`` plane of its byte; reading is
    thread-safe (each call allocates its own output).
    """

    def __init__(self, packed: np.ndarray, index: np.ndarray, device) -> None:
        needed, where = np.unique(index // 8, return_inverse=True)
        n_ckpt, probes, width = packed.shape
        flat = torch.from_numpy(np.ascontiguousarray(packed)).view(n_ckpt * probes, width)
        if len(needed) < width:
            flat = flat[:, torch.from_numpy(needed)]
        # a 2-D transpose in torch: 4x faster than NumPy's on these (N D, bytes) arrays
        self.by_byte = flat.t().contiguous().view(len(needed), n_ckpt, probes).to(device)
        self.byte = torch.from_numpy(where.reshape(-1)).to(device)  # unit index[i] lives in plane byte[i]
        self.shift = torch.from_numpy((7 - index % 8).astype(np.uint8)).to(device)  # at this bit (MSB first)

    def read(self, members: np.ndarray) -> torch.Tensor:
        """The units at positions ``members`` of ``index``."""
        pick = torch.from_numpy(np.asarray(members)).to(self.byte.device)
        return (self.by_byte[self.byte[pick]] >> self.shift[pick].view(-1, 1, 1)) & 1


def _centred_grams(bits: torch.Tensor) -> torch.Tensor:
    """``(c, N, D)`` 0/1 float32 to each unit's centred Gram, ``(c, s, s)`` float64 with ``s = min(N, D)``.

    The 0/1 products are exact in float32 (integers below ``2^24``); centring follows in float64.
    """
    n_ckpt = bits.shape[1]
    if n_ckpt <= bits.shape[2]:  # X X^T with X = H A: H (A A^T) H
        gram = torch.bmm(bits, bits.transpose(1, 2)).double()
        rows = gram.sum(2, keepdim=True) / n_ckpt
        return gram - rows - rows.transpose(1, 2) + rows.sum(1, keepdim=True) / n_ckpt
    gram = torch.bmm(bits.transpose(1, 2), bits).double()  # X^T X = A^T A - s s^T / N
    sums = bits.sum(1).double()
    return gram - sums.unsqueeze(2) * sums.unsqueeze(1) / n_ckpt


@contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    """Run CPU LAPACK on one thread per call: on batches of small matrices more threads
    only add synchronisation (measured 50x slower with 2 threads on a busy 2-core
    machine); :func:`log_volume` runs one call per core instead."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _chunk_volume(slab: torch.Tensor, size: int, k: int, floor: float) -> np.ndarray:
    """Log-volumes of a chunk of units ``(c, N, D)`` uint8 that change on ``size`` probes at most."""
    n_ckpt = slab.shape[1]
    if size < slab.shape[2]:  # each unit's changing probes first, then all-zero (constant) columns
        changed = slab.amax(1) != slab.amin(1)  # (c, D)
        order = torch.sort((~changed).to(torch.uint8), dim=1, stable=True).indices[:, :size]
        valid = torch.gather(changed, 1, order).to(slab.dtype)
        slab = torch.gather(slab, 2, order[:, None, :].expand(-1, n_ckpt, -1)) * valid[:, None, :]
    grams = _centred_grams(slab.float())
    top = torch.linalg.eigvalsh(grams)[:, -k:]  # ascending: the k largest (fewer if the Gram is smaller)
    logs = top.clamp_min(0).sqrt().clamp_min(floor).log().sum(1) + (k - top.shape[1]) * math.log(floor)
    return logs.cpu().numpy()


def log_volume(
    packed: np.ndarray,
    units: int,
    values: int = DEFAULT_VALUES,
    floor: float = DEFAULT_FLOOR,
    sample: int | None = None,
    seed: int = 0,
    sort: bool = True,
    device: str | torch.device = "cpu",
    chunk_entries: int = 1 << 25,
) -> np.ndarray:
    """Figure 5(c): per unit, ``sum_{i<=k} log max(sigma_i(X_m), floor)`` (module docstring).

    Args:
        packed: ``(N, D, ceil(M / 8))`` uint8; units: ``M``.
        values: at most this many singular values (the paper's 50).
        floor: singular values below it count as ``floor``.
        sample, seed: compute only :func:`subsample_units` ``(M, sample, seed)``.
        sort: largest first (else in the order of :func:`subsample_units`).
        device: where the batched products and eigenvalues run.
        chunk_entries: bound on ``units x N x D`` per batch (memory).

    Returns:
        ``(U,)`` float64 for the ``U`` selected units; all NaN when ``N = 1``.
    """
    n_ckpt, probes = packed.shape[:2]
    chosen = subsample_units(units, sample, seed)
    k = min(values, n_ckpt - 1, probes)
    if k < 1:
        return np.full(len(chosen), np.nan)
    device = torch.device(device)
    # Only the probes on which a unit ever changes matter: a constant column is zero once
    # centred. Units are bucketed by that count (a power of two) and keep only that many
    # columns, padding with all-zero ones: Grams are min(N, columns) wide and cheaper to form.
    changing = changing_probes(packed, units)[chosen]
    out = np.empty(len(chosen))
    # One chunk per core at a time, each on one LAPACK thread: eigvalsh over a batch of
    # small matrices is a serial loop inside LAPACK, so cores are only used this way.
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    reader = _UnitReader(packed, chosen, device)
    jobs = []
    for size, members in _size_buckets(changing, probes):
        # at most chunk_entries bits per chunk, and at least one chunk per worker
        step = max(1, min(chunk_entries // (n_ckpt * probes), -(-len(members) // workers)))
        jobs += [(size, members[start : start + step]) for start in range(0, len(members), step)]
    with _single_thread(device), ThreadPoolExecutor(max(1, workers)) as pool:
        pending: deque = deque()
        for size, members in jobs:
            pending.append((members, pool.submit(lambda s=size, m=members: _chunk_volume(reader.read(m), s, k, floor))))
            if len(pending) > 2 * workers:  # bounded: a chunk's bits are chunk_entries bytes
                done, future = pending.popleft()
                out[done] = future.result()
        for done, future in pending:
            out[done] = future.result()
    return -np.sort(-out) if sort else out


def changing_probes(packed: np.ndarray, units: int) -> np.ndarray:
    """Per unit, on how many probe inputs its state ever changes over the checkpoints: ``(M,)`` int64."""
    ever_on = np.bitwise_or.reduce(packed, axis=0)
    always_on = np.bitwise_and.reduce(packed, axis=0)
    changed = np.unpackbits(ever_on ^ always_on, axis=-1, count=units)  # (D, M)
    return changed.sum(axis=0, dtype=np.int64)


def _size_buckets(changing: np.ndarray, probes: int) -> Iterator[tuple[int, np.ndarray]]:
    """Group units by the columns kept: powers of two above their count of changing probes, capped at ``D``.

    The Gram is ``min(N, columns)`` wide; beyond ``N`` columns fewer of them still make it cheaper to form.
    """
    sizes = np.minimum(2 ** np.ceil(np.log2(np.maximum(changing, 1))).astype(np.int64), probes)
    for size in np.unique(sizes):
        yield int(size), np.flatnonzero(sizes == size)


def exploration_metrics(
    arrays: Any,
    name: str = "configurations",
    checkpoints: str = "epoch",
    values: int = DEFAULT_VALUES,
    floor: float = DEFAULT_FLOOR,
    volume_units: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """All three metrics for a run recorded with :class:`~ntaylor_lib.exploration.configurations.ConfigurationRecorder`.

    Args:
        arrays: a stored run (anything with ``.arrays``) or its arrays mapping.
        name: the recorder's name (the prefix of its arrays).
        checkpoints: ``epoch`` (epoch ends only, as Figure 5) or ``all``.
        values, floor, volume_units, seed, device: as in :func:`log_volume`
            (``volume_units`` is its ``sample``).

    Returns:
        ``novelty`` ``(N,)``, ``epoch`` ``(N,)`` (where each checkpoint was taken),
        ``switches`` ``(D,)`` and ``volume`` ``(U,)`` sorted largest first,
        ``volume_units`` the indices of the units behind ``volume``.
    """
    if checkpoints not in ("epoch", "all"):
        raise ValueError(f"checkpoints={checkpoints!r} is not one of epoch, all")
    stored: Mapping[str, np.ndarray] = getattr(arrays, "arrays", arrays)
    keep = slice(None) if checkpoints == "all" else stored[f"{name}/epoch_end"]
    packed = stored[f"{name}/packed"][keep]
    units = int(stored[f"{name}/units"])
    return {
        "novelty": novelty(packed, units),
        "epoch": stored[f"{name}/epoch"][keep],
        "switches": switches(packed, units),
        "volume": log_volume(packed, units, values, floor, volume_units, seed, device=device),
        "volume_units": subsample_units(units, volume_units, seed),
    }


def exploration_summary(metrics: Mapping[str, np.ndarray]) -> dict[str, float]:
    """One number per metric of :func:`exploration_metrics`, larger meaning more exploration.

    ``novelty``: the mean of ``h_n`` over checkpoints ``n >= 1``; ``switches``: the mean
    over probe inputs; ``volume``: the median over units (floored units pull a mean down
    without bound, a median not). NaN where the metric is undefined (fewer than two checkpoints).
    """
    def reduce(values: np.ndarray, how) -> float:
        finite = values[np.isfinite(values)]
        return float(how(finite)) if finite.size else float("nan")

    return {
        "novelty": reduce(np.asarray(metrics["novelty"])[1:], np.mean),
        "switches": reduce(np.asarray(metrics["switches"]), np.mean),
        "volume": reduce(np.asarray(metrics["volume"]), np.median),
    }


# Slow, obviously correct references: the definitions, one pair / input / unit at a time.


def novelty_reference(configs: np.ndarray) -> np.ndarray:
    """(a) from a ``(N, D, M)`` bool tensor: a double loop over checkpoint pairs."""
    n_ckpt, probes, units = configs.shape
    out = np.full(n_ckpt, np.nan)
    for n in range(1, n_ckpt):
        a_n = configs[n].astype(np.float64)
        out[n] = min(((a_n - configs[k]) ** 2).sum() for k in range(n)) / (probes * units)
    return out


def switches_reference(configs: np.ndarray) -> np.ndarray:
    """(b) from a ``(N, D, M)`` bool tensor, sorted largest first: a loop over inputs and checkpoints."""
    n_ckpt, probes, units = configs.shape
    if n_ckpt < 2:
        return np.full(probes, np.nan)
    step = lambda n, d: ((configs[n + 1, d].astype(np.float64) - configs[n, d]) ** 2).sum()  # noqa: E731
    out = np.array([sum(step(n, d) for n in range(n_ckpt - 1)) / ((n_ckpt - 1) * units) for d in range(probes)])
    return -np.sort(-out)


def log_volume_reference(
    configs: np.ndarray,
    values: int = DEFAULT_VALUES,
    floor: float = DEFAULT_FLOOR,
    unit_index: np.ndarray | None = None,
) -> np.ndarray:
    """(c) from a ``(N, D, M)`` bool tensor, one SVD per unit, sorted largest first (``unit_index``: a subset)."""
    n_ckpt, probes, units = configs.shape
    k = min(values, n_ckpt - 1, probes)
    index = np.arange(units) if unit_index is None else np.asarray(unit_index)
    if k < 1:
        return np.full(len(index), np.nan)
    out = []
    for m in index:
        x = configs[:, :, m].astype(np.float64)
        x -= x.mean(axis=0)
        sigma = np.linalg.svd(x, compute_uv=False)  # descending
        out.append(np.log(np.maximum(sigma[:k], floor)).sum())
    return -np.sort(-np.array(out))


__all__ = [
    "DEFAULT_FLOOR",
    "DEFAULT_VALUES",
    "changing_probes",
    "exploration_metrics",
    "exploration_summary",
    "hamming_matrix",
    "log_volume",
    "log_volume_reference",
    "novelty",
    "novelty_reference",
    "subsample_units",
    "switches",
    "switches_reference",
]
