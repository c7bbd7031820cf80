"""Benchmark of the Taylor machinery: ratios on the same work (measured numbers: benchmarks/README.md).

Prints, for both tasks: structured Jacobian capture per minibatch against a per-sample
``autograd.grad`` loop (timed on a few samples, scaled to the batch) and against
``vmap(jacrev)``; training with the Taylor recorders attached against plain training
(``--epochs`` epochs of the cpu profile); and the solver's time per horizon.

    python benchmarks/bench_taylor.py [--epochs 1]
    python benchmarks/bench_taylor.py --device cuda --bundle data/gpu_check --no-solve   # the same work on a GPU

On a GPU machine without the book's packages or torchvision's data, ``--bundle`` reads
the MNIST arrays of ``python -m ntaylor_lib data --gpu-bundle`` instead; every timing is
then taken with CUDA synchronised before and after.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import seconds

from ntaylor_lib.paper.experiments import taylor_recorders
from ntaylor_lib.runs.allocator import retain_freed_memory
from ntaylor_lib.runs.config import run_config
from ntaylor_lib.runs.data import MissingDataError, load_gpu_bundle, task_data, task_data_from_arrays
from ntaylor_lib.runs.models import build_model
from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.runs.training import train
from ntaylor_lib.taylor.jacobians import Scale, jacrev_jacobian, reference_jacobian, scale_jacobian


def best_of(fn, device: str, repeat: int = 3) -> float:
    return min(seconds(fn, device) for _ in range(repeat))


def load(config, train_size: int, eval_size: int, probe_size: int, bundle: Path | None):
    """The run's data on its device: torchvision's files, or the GPU bundle in ``bundle``."""
    if bundle is None:
        return task_data(config.task, config.dataset, train_size, eval_size, probe_size, config.device)
    arrays = load_gpu_bundle(config.dataset, bundle)
    if arrays is None:
        raise MissingDataError(f"no {config.dataset}.pt.gz under {bundle}: "
                               "run `python -m ntaylor_lib data --gpu-bundle`")
    return task_data_from_arrays(arrays, config.task, config.dataset, train_size, eval_size, probe_size, config.device)


def capture(task: str, params, scale: Scale, batch: int, bundle: Path | None, loop_samples: int = 8) -> None:
    config = run_config(params, task, "rmsprop", lr=params[f"lr_{task}_rmsprop"])
    data = load(config, 2048, 64, 16, bundle)
    torch.manual_seed(0)
    model = build_model(task, config.dataset, config.width).to(config.device)
    x, device = data.train_x[:batch], config.device
    fast = best_of(lambda: scale_jacobian(model, x, scale), device)
    jac = best_of(lambda: jacrev_jacobian(model, x, scale), device, repeat=1)
    loop = best_of(lambda: reference_jacobian(model, x[:loop_samples], scale), device, repeat=1) * batch / loop_samples
    print(f"{task} {scale.label} batch {batch}: structured {fast * 1e3:.1f} ms, vmap(jacrev) {jac * 1e3:.1f} ms "
          f"({jac / fast:.1f}x), autograd.grad loop {loop * 1e3:.0f} ms (scaled from {loop_samples} samples, "
          f"{loop / fast:.0f}x)")


def recorder_capture(params, bundle: Path | None, loop_samples: int = 2) -> None:
    """What the convnet's factor recorder captures on a recorded round (every scale it
    tracks: layer 1 whole, conv and dense neurons) against the autograd loop computing
    the same Jacobians (one backward per sample and output gives every layer's)."""
    config = run_config(params, "convnet", "rmsprop", lr=params["lr_convnet_rmsprop"])
    data = load(config, 2048, 64, 16, bundle)
    torch.manual_seed(0)
    model = build_model("convnet", config.dataset, config.width).to(config.device)
    recorder = taylor_recorders("convnet", params, solve_at_end=False)[0]
    recorder.setup(model, data, config)
    x, y = data.train_x[: config.batch_size], data.train_y[: config.batch_size]
    samples = recorder.samples or config.batch_size
    fast = best_of(lambda: recorder.on_round(0, model, x, y), config.device, repeat=3)
    loop = (best_of(lambda: reference_jacobian(model, x[:loop_samples], Scale()), config.device, repeat=1)
            * samples / loop_samples)
    print(f"convnet factor recorder, one recorded round ({len(recorder.groups)} groups, {samples} samples): "
          f"{fast * 1e3:.1f} ms, autograd.grad loop {loop * 1e3:.0f} ms (scaled from {loop_samples} samples, "
          f"{loop / fast:.0f}x)")


def training(task: str, params, label: str, bundle: Path | None, solve: bool = True) -> None:
    config = run_config(params, task, "rmsprop", lr=params[f"lr_{task}_rmsprop"], check_data=bundle is None)
    data, device = load(config, config.train_size, config.eval_size, config.probe_size, bundle), config.device
    train(config, data=data, progress=False)  # warm-up: allocator, kernels
    # Alternated, each the best of three, fresh recorders every time: both sides see the same
    # machine state, and neither gets a warm-up the other lacks.
    plain, recorded = [], []
    for _ in range(3):
        plain.append(best_of(lambda: train(config, data=data, progress=False), device, repeat=1))
        recorders = taylor_recorders(task, params, solve_at_end=False)
        recorded.append(seconds(lambda: train(config, recorders=recorders, data=data, progress=False), device))
    plain, recorded = min(plain), min(recorded)
    print(f"{task}{label} training ({config.epochs} epochs, {params['train_size']} samples): plain {plain:.2f} s, "
          f"with recorders {recorded:.2f} s ({recorded / plain:.2f}x; best of 3 each, alternated)")
    for recorder in recorders if solve else []:
        solve_s = seconds(recorder.solve, device)
        horizons = len(recorder.horizons)
        scales = len(recorder.arrays()["labels"])
        print(f"  solve {recorder.name}: {solve_s:.1f} s for {scales} scales x {len(recorder.box_scales)} boxes = "
              f"{solve_s / horizons:.2f} s per horizon")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep glibc's default allocator settings (the library's entry points retain freed memory)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--bundle", type=Path, default=None,
                        help="read MNIST from this GPU data bundle (python -m ntaylor_lib data --gpu-bundle)")
    parser.add_argument("--no-solve", dest="solve", action="store_false", help="skip the solver timings")
    args = parser.parse_args()
    # As the command line and the book do; the fast paths and their baselines run under the same setting.
    retained = False if args.default_malloc else retain_freed_memory()

    def cpu_profile(**extra):  # the profile's fixed rates: a benchmark must not depend on a tuning having run
        return get_profile("cpu", {"epochs": args.epochs, "device": args.device, "lr_source": "fixed", **extra})

    params = cpu_profile()
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, freed memory retained: {retained}")
    bundle = args.bundle
    capture("autoencoder", params, Scale(3), 64, bundle)
    capture("convnet", params, Scale(2), 128, bundle)
    capture("convnet", params, Scale(2, 0), 128, bundle)
    recorder_capture(params, bundle)
    training("autoencoder", cpu_profile(taylor_neurons=0, taylor_input_neurons=0), " (layer 3 alone)",
             bundle, args.solve)
    training("autoencoder", params, " (cpu profile: layer 3, 10 neurons per layer)", bundle, args.solve)
    training("autoencoder", cpu_profile(taylor_neurons=50, taylor_input_neurons=50),
             " (layer 3, 50 neurons of every layer)", bundle, args.solve)
    training("convnet", params, " (cpu profile)", bundle, args.solve)


if __name__ == "__main__":
    main()
