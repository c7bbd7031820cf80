"""Exploration metrics: the fast paths of ``ntaylor_lib.exploration`` against the NumPy references.

Two kinds of configurations with N = 100 checkpoints and D = 1000 probe inputs, for
M = 180 (the autoencoder) and M of the MNIST convnet at width 16 (and, with ``--wide``, 64):

* random (each entry active with probability 1/2): the worst case of the log-volume's
  fast path, every unit changing on every probe, so every Gram is ``N x N``;
* recorded from real training (RMSProp at the ``cpu`` profile, 10 epochs, a checkpoint
  every few rounds, 100 of them kept evenly): as Figure 5 sees them, most units change on
  few probes, and the log-volume only diagonalises Grams over the probes that change.

The fast paths run on all M units. Each reference costs time linear in M, so where
timing it on all units would take too long it runs on ``m`` units spread evenly over the
network and its time is scaled by ``M / m``; the output says where. (The SVD's time
depends on the values, so the first ``m`` units alone would not do.) Prints seconds, the ratio
(target: at least 50x) and the storage cost in bits per configuration entry.

    .venv/bin/python benchmarks/bench_exploration.py [--wide] [--threads 2] [--no-recorded]
"""

from __future__ import annotations

import os

# NumPy's BLAS on one thread, set before NumPy loads: the references' per-unit SVDs of
# 100 x 1000 matrices take 3 ms on one thread and 140 ms on two on a busy 2-core machine
# (thread synchronisation), so one thread is the references' fair, fastest setting. The
# fast path runs its batched eigenvalues on one thread for the same reason.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np
import torch

from ntaylor_lib.exploration.metrics import (
    changing_probes,
    log_volume,
    log_volume_reference,
    novelty,
    novelty_reference,
    switches,
    switches_reference,
)
from ntaylor_lib.runs.allocator import retain_freed_memory


def convnet_units(width: int, side: int = 28, hidden: int = 192) -> int:
    """ReLU units of the convnet: three conv layers at ``side``, ``side/2``, ``side/4``, then the dense layer."""
    return sum(width * (side >> i) ** 2 for i in range(3)) + hidden


def seconds(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def random_packed(n: int, d: int, m: int, rng: np.random.Generator) -> np.ndarray:
    packed = rng.integers(0, 256, size=(n, d, (m + 7) // 8), dtype=np.uint8)
    if m % 8:
        packed[..., -1] &= np.uint8((0xFF << (8 - m % 8)) & 0xFF)  # padding bits stay zero, as pack_bits leaves them
    return packed


def recorded_packed(task: str, n: int, d: int) -> tuple[np.ndarray, int]:
    """``n`` evenly spaced checkpoints of a real RMSProp run at the cpu profile, on ``d`` probes."""
    from ntaylor_lib.exploration.configurations import ConfigurationRecorder
    from ntaylor_lib.runs.config import run_config
    from ntaylor_lib.runs.data import task_data
    from ntaylor_lib.runs.profiles import get_profile
    from ntaylor_lib.runs.training import train

    params = get_profile("cpu", {"device": "cpu", "lr_source": "fixed", "probe_size": d})
    config = run_config(params, task, "rmsprop", lr=params[f"lr_{task}_rmsprop"])
    rounds = config.epochs * (config.train_size // config.batch_size)
    recorder = ConfigurationRecorder(round_stride=max(1, rounds // (2 * n)))
    data = task_data(task, config.dataset, config.train_size, config.eval_size, config.probe_size)
    train(config, recorders=[recorder], data=data, progress=False)
    arrays = recorder.arrays()
    packed = arrays["packed"]
    keep = np.unique(np.linspace(0, len(packed) - 1, n).round().astype(int))
    return np.ascontiguousarray(packed[keep]), int(arrays["units"])


def bench(packed: np.ndarray, m: int, label: str, ref_units: dict[str, int]) -> None:
    n, d = packed.shape[:2]
    bits = 8 * packed.shape[-1] / m
    print(f"\n{label}: N={n}, D={d}, M={m}; packed {packed.nbytes / 2**20:.1f} MiB, {bits:.3f} bits per entry "
          f"(a bool array: 8)")
    fast = {
        "novelty": lambda: novelty(packed, m),
        "switches": lambda: switches(packed, m),
        "log-volume": lambda: log_volume(packed, m),
    }
    slow = {
        "novelty": novelty_reference,
        "switches": switches_reference,
        "log-volume": log_volume_reference,
    }
    for name in fast:
        t_fast = seconds(fast[name])
        used = min(m, ref_units[name])
        # units spread evenly over the network: the SVD's time depends on the values (measured
        # 3.9 ms a unit on evenly spread units of a recorded convnet, 13.9 ms on its first 100)
        index = np.unique(np.linspace(0, m - 1, used).round().astype(np.int64))
        # C order, as np.unpackbits would give (the gather alone leaves the unit axis outermost in memory)
        subset = np.ascontiguousarray(((packed[:, :, index // 8] >> (7 - index % 8).astype(np.uint8)) & 1).astype(bool))
        t_ref = seconds(slow[name], subset) * m / len(index)
        how = ("measured" if used == m
               else f"timed on {len(index)} units spread over M, x{m / len(index):.0f} (linear in M)")
        print(f"  {name:<10} fast {t_fast:8.3f} s   reference {t_ref:9.1f} s ({how})   ratio {t_ref / t_fast:7.0f}x")


def eigvalsh_ceiling(n: int, d: int, rng: np.random.Generator, units: int = 200) -> None:
    """The log-volume's floor in time (the ceiling of its ratio): any exact method needs
    each unit's singular values, and the cheapest route here is one LAPACK ``eigvalsh`` of
    the unit's ``N x N`` centred Gram. Timed on ``units`` random units, one thread, against
    the reference's SVD of the same units."""
    x = (rng.random((units, n, d)) < 0.5).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    grams = torch.from_numpy(x @ x.transpose(0, 2, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_eig = seconds(torch.linalg.eigvalsh, grams) / units
    torch.set_num_threads(threads)
    t_svd = seconds(lambda: [np.linalg.svd(u, compute_uv=False) for u in x]) / units
    print(f"\nlog-volume ceiling: eigvalsh of one {n} x {n} Gram {t_eig * 1e3:.2f} ms on one thread, the reference's "
          f"SVD of one {n} x {d} matrix {t_svd * 1e3:.2f} ms: at most {t_svd / t_eig:.0f}x per core "
          f"({threads * t_svd / t_eig:.0f}x on {threads} cores) before forming the Grams at all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wide", action="store_true", help="also the paper-scale width 64 (about 2 minutes more)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-recorded", action="store_true",
                        help="skip the configurations of real runs (about a minute)")
    args = parser.parse_args()
    retain_freed_memory()  # as the command line and the book run (ntaylor_lib.runs.allocator)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.threads} torch threads, "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    rng = np.random.default_rng(0)
    n, d = 100, 1000
    autoencoder_refs = {"novelty": 180, "switches": 180, "log-volume": 180}
    convnet_refs = {"novelty": 360, "switches": 16656, "log-volume": 300}
    eigvalsh_ceiling(n, d, rng)
    bench(random_packed(n, d, 180, rng), 180, "autoencoder, random", autoencoder_refs)
    sizes = [16] + ([64] if args.wide else [])
    for width in sizes:
        m = convnet_units(width)
        bench(random_packed(n, d, m, rng), m, f"convnet width {width} (MNIST), random", convnet_refs)
    if not args.no_recorded:
        packed, m = recorded_packed("autoencoder", n, d)
        bench(packed, m, "autoencoder, recorded (RMSProp, cpu profile)", autoencoder_refs)
        packed, m = recorded_packed("convnet", n, d)
        changing = changing_probes(packed, m)
        print(f"\nconvnet recording: units change on a median of {np.median(changing):.0f} of {d} probes")
        bench(packed, m, "convnet width 16, recorded (RMSProp, cpu profile)", convnet_refs)


if __name__ == "__main__":
    main()
