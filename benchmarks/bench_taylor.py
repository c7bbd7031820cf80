"""Benchmark of the Taylor machinery: ratios on the same work (DESIGN.md section 2, issue 4).

Prints, for both tasks: structured Jacobian capture per minibatch against a per-sample
``autograd.grad`` loop (timed on a few samples, scaled to the batch) and against
``vmap(jacrev)``; training with the Taylor recorders attached against plain training
(``--epochs`` epochs of the cpu profile); and the solver's time per horizon.

    python benchmarks/bench_taylor.py [--epochs 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from ntaylor_lib import get_profile, run_config, train
from ntaylor_lib.allocator import retain_freed_memory
from ntaylor_lib.data import task_data
from ntaylor_lib.jacobians import Scale, jacrev_jacobian, reference_jacobian, scale_jacobian
from ntaylor_lib.models import build_model
from ntaylor_lib.regret import taylor_recorders


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def capture(task: str, params, scale: Scale, batch: int, loop_samples: int = 8) -> None:
    config = run_config(params, task, "rmsprop", lr=params[f"lr_{task}_rmsprop"])
    data = task_data(task, config.dataset, 2048, 64, 16)
    torch.manual_seed(0)
    model = build_model(task, config.dataset, config.width)
    x = data.train_x[:batch]
    fast = best_of(lambda: scale_jacobian(model, x, scale))
    jac = best_of(lambda: jacrev_jacobian(model, x, scale), repeat=1)
    loop = best_of(lambda: reference_jacobian(model, x[:loop_samples], scale), repeat=1) * batch / loop_samples
    print(f"{task} {scale.label} batch {batch}: structured {fast * 1e3:.1f} ms, vmap(jacrev) {jac * 1e3:.1f} ms "
          f"({jac / fast:.1f}x), autograd.grad loop {loop * 1e3:.0f} ms (scaled from {loop_samples} samples, "
          f"{loop / fast:.0f}x)")


def recorder_capture(params, loop_samples: int = 2) -> None:
    """What the convnet's factor recorder captures on a recorded round (every scale it
    tracks: layer 1 whole, conv and dense neurons) against the autograd loop computing
    the same Jacobians (one backward per sample and output gives every layer's)."""
    config = run_config(params, "convnet", "rmsprop", lr=params["lr_convnet_rmsprop"])
    data = task_data("convnet", config.dataset, 2048, 64, 16)
    torch.manual_seed(0)
    model = build_model("convnet", config.dataset, config.width)
    recorder = taylor_recorders("convnet", params, solve_at_end=False)[0]
    recorder.setup(model, data, config)
    x, y = data.train_x[: config.batch_size], data.train_y[: config.batch_size]
    samples = recorder.samples or config.batch_size
    fast = best_of(lambda: recorder.on_round(0, model, x, y), repeat=3)
    loop = best_of(lambda: reference_jacobian(model, x[:loop_samples], Scale()), repeat=1) * samples / loop_samples
    print(f"convnet factor recorder, one recorded round ({len(recorder.groups)} groups, {samples} samples): "
          f"{fast * 1e3:.1f} ms, autograd.grad loop {loop * 1e3:.0f} ms (scaled from {loop_samples} samples, "
          f"{loop / fast:.0f}x)")


def training(task: str, params, label: str = "") -> None:
    config = run_config(params, task, "rmsprop", lr=params[f"lr_{task}_rmsprop"])
    data = task_data(task, config.dataset, config.train_size, config.eval_size, config.probe_size)
    train(config, data=data, progress=False)  # warm-up: allocator, kernels
    # Alternated, each the best of three, fresh recorders every time: both sides see the same
    # machine state, and neither gets a warm-up the other lacks.
    plain, recorded = [], []
    for _ in range(3):
        plain.append(best_of(lambda: train(config, data=data, progress=False), repeat=1))
        recorders = taylor_recorders(task, params, solve_at_end=False)
        start = time.perf_counter()
        train(config, recorders=recorders, data=data, progress=False)
        recorded.append(time.perf_counter() - start)
    plain, recorded = min(plain), min(recorded)
    print(f"{task}{label} training ({config.epochs} epochs, {params['train_size']} samples): plain {plain:.2f} s, "
          f"with recorders {recorded:.2f} s ({recorded / plain:.2f}x; best of 3 each, alternated)")
    for recorder in recorders:
        start = time.perf_counter()
        recorder.solve()
        solve = time.perf_counter() - start
        horizons = len(recorder.horizons)
        scales = len(recorder.arrays()["labels"])
        print(f"  solve {recorder.name}: {solve:.1f} s for {scales} scales x {len(recorder.box_scales)} boxes = "
              f"{solve / horizons:.2f} s per horizon")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep glibc's default allocator settings (the library's entry points retain freed memory)")
    args = parser.parse_args()
    # As the command line and the book do; the fast paths and their baselines run under the same setting.
    retained = False if args.default_malloc else retain_freed_memory()

    def cpu_profile(**extra):  # the profile's fixed rates: a benchmark must not depend on a tuning having run
        return get_profile("cpu", {"epochs": args.epochs, "device": "cpu", "lr_source": "fixed", **extra})

    params = cpu_profile()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, freed memory retained: {retained}")
    capture("autoencoder", params, Scale(3), 64)
    capture("convnet", params, Scale(2), 128)
    capture("convnet", params, Scale(2, 0), 128)
    recorder_capture(params)
    training("autoencoder", cpu_profile(taylor_neurons=0, taylor_input_neurons=0), " (layer 3 alone)")
    training("autoencoder", params, " (cpu profile: layer 3, 10 neurons per layer)")
    training("autoencoder", cpu_profile(taylor_neurons=50, taylor_input_neurons=50), " (layer 3, 50 neurons of every layer)")
    training("convnet", params, " (cpu profile)")


if __name__ == "__main__":
    main()
